"""The web page at `/`: its routes (web_page.py) and its files (page/, shipped as package data)."""
