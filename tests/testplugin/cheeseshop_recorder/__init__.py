"""Test plugin."""
