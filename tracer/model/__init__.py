"""The model: pairing, journeys, the call tree, stats, drops, routes, replay."""
