"""Sweep grids (*.toml), grid expansion, the Ray sweep engine and the run store."""
