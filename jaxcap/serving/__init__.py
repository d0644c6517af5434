"""Serving: the Starlette app with its batching model thread (`app`) and the page it serves
(`page.html`)."""
