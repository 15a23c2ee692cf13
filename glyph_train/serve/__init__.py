"""`glyph-train serve`: a local web page to search look-alike glyphs in an index and to review the labels the
model gives every glyph of an uploaded font.

    command.py   the subcommand: flags, the upload folder's lifetime, the WSGI server (waitress)
    app.py       the Flask app: pages, JSON API and PNG routes; errors become one-line messages
    catalog.py   the index side: character grid, family names, searches by character or by indexed glyph
    review.py    uploaded fonts: labelling jobs, the reviewer's decisions, CSV and repaired-font downloads
    isolated.py  runs font parsing in a spawned process with a timeout, so a bad font cannot stop the server
    images.py    glyph PNGs drawn by the project's renderer, kept in an LRU cache

Requests name things by ids only (an index row, an upload's random id, a glyph id); no path from a request
is ever opened.
"""
