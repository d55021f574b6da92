"""make wheel: fetch -> apply -> overlay build -> verify -> wheelhouse (plus setup.py modes)."""
