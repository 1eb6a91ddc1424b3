"""`kit host`: serve a competition from a laptop (web pages, JSON API, team tokens, private board).

admin (the host's commands), app (the ASGI server), api and web (its JSON API and its pages, one
router each), pages (their HTML), store (the SQL layer), scoring (validation and metrics shared
with `kit validate`), auth (tokens, sessions, CSRF), bootstrap (the public scores' intervals).
"""
