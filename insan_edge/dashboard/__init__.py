"""The parents' dashboard: HTML pages served by the daemon at ``/`` (LAN gateway, localhost).

``auth`` (passphrase, sessions, CSRF), ``data`` (read-only queries on the store), ``charts``
(SVG drawn on the box), ``pages`` (HTML from the templates shipped here) and ``web`` (routes and
actions, each through the same code as the API and CLI).
"""
