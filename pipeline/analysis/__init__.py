"""From the runs' artifacts to the report: reading runs, the comparison and its statistics, the
post's claims, provenance, and the HTML (render.py, templates/)."""
