"""Pure renderers: report objects in, ``str`` out (text for terminals, self-contained HTML)."""
