"""Serving: answers predictions with the champion and hot-swaps when the champion changes."""
