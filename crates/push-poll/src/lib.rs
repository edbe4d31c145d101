//! Short (interval) polling on hyper, over any push-core hub. Arrives with the polling issue; empty for now so the facade's features resolve.
