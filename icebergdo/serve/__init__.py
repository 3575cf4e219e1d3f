"""`icebergdo serve`: one process, one port, separate route prefixes and auth scopes.

    rest/   the Iceberg REST catalog (`/catalog`): any engine attaches with one URL
"""
