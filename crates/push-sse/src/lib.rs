//! Server-Sent Events on hyper, over any push-core hub. Arrives with the SSE issue; empty for now so the facade's features resolve.
