"""For development and first steps: a local S3 server, the demo data, and the checks behind `init` and `doctor`.

    s3dev.py   `weed mini` (SeaweedFS) on 127.0.0.1, started and stopped by PID
    demo.py    a realistic day of mixed events
    checks.py  can this config reach its catalog and bucket? (`init`, `doctor`)
"""
