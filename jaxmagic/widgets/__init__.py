"""Live notebook views (anywidget). Imported only inside a notebook kernel."""
