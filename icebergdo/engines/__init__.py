"""Other engines on the same catalog and warehouse: DuckDB (reads) and Spark (reads, writes, Iceberg's procedures).

    duck.py         a DuckDB connection with the iceberg extension loaded offline, one view per table
    spark.py        a SparkSession whose catalog is ours (Iceberg's JdbcCatalog on the same database)
    spark_jars.py   the jars Spark needs, found or built offline and cached
    java/           the Java sources compiled into icebergdo's own jar (package data)
"""
