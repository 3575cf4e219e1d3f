"""pyiceberg behind one door: the only package that imports pyiceberg's internal names.

pyiceberg owns metadata, manifests and commits; what it lacks (writing Arrow as data files with our
own partition cuts, `replace` snapshots for compaction and manifest rewrites, reading chosen files)
is built here on its producer and writer classes. pyiceberg is pinned (==0.12.0) for this reason:
an upgrade is checked against these modules only.

    catalog.py    the SQL catalog subclass (version hints, SQLite tuning) and `open_catalog`
    datafiles.py  `write_data_files`, partition cuts, the append fast path, the target file size
    producers.py  `ReplaceDataFiles` (compaction) and `RewriteManifests` snapshot producers
    scan.py       reading given data files / scan tasks into Arrow
    schemas.py    Arrow schema → a fresh Iceberg schema (new field ids, identifier fields)
"""
