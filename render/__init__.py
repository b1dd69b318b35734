"""Renderers: turn the model (call tree, journeys, statistics) into text, SVG, DOT or rich views."""
