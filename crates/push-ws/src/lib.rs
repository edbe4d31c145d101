//! WebSockets on hyper and tungstenite, over any push-core hub. Arrives with the WebSocket issue; empty for now so the facade's features resolve.
