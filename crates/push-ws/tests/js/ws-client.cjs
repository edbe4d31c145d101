// A third-party WebSocket client for push-ws's tests: the `ws` package.
// Prints one JSON line per event on stdout; each line read on stdin is sent
// as a text frame. Usage: node ws-client.cjs URL [SUBPROTOCOL]
const WebSocket = require("ws");
const readline = require("readline");

const [url, protocol] = process.argv.slice(2);
const socket = protocol ? new WebSocket(url, protocol) : new WebSocket(url);
const print = (line) => process.stdout.write(JSON.stringify(line) + "\n");

socket.on("open", () => {
  print({ type: "open", protocol: socket.protocol });
  readline.createInterface({ input: process.stdin }).on("line", (line) => socket.send(line));
});
socket.on("message", (data, isBinary) => print({ type: "message", binary: isBinary, data: data.toString() }));
socket.on("close", (code) => {
  print({ type: "close", code });
  process.exit(0);
});
socket.on("error", (error) => print({ type: "error", message: String(error) }));
