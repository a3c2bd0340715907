"""Standalone scripts run by path with a backend's interpreter. They never import lazytune."""
