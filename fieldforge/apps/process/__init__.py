"""Photographs or a video to a posed dataset: image gathering and structure from motion (pycolmap)."""
