"""Live views (anywidget). Each keeps a text/plain fallback and a static HTML snapshot."""
