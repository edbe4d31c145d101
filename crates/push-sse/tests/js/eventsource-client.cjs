// A third-party SSE client for push-sse's tests: the `eventsource` package
// (a WHATWG-conformant EventSource for Node). Prints one JSON line per event
// on stdout, and reconnects by itself with Last-Event-ID, as browsers do.
// Usage: node eventsource-client.cjs URL [EVENT_TYPE ...]
const { EventSource } = require("eventsource");

const [url, ...types] = process.argv.slice(2);
const source = new EventSource(url);
const print = (line) => process.stdout.write(JSON.stringify(line) + "\n");

source.onopen = () => print({ type: "open" });
source.onerror = () => print({ type: "error", readyState: source.readyState });
for (const type of ["message", ...types]) {
  source.addEventListener(type, (event) =>
    print({ type: event.type, id: event.lastEventId, data: event.data }),
  );
}
// The test ends us by closing stdin.
process.stdin.on("end", () => {
  source.close();
  process.exit(0);
});
process.stdin.resume();
