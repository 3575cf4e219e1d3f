package icebergdo;

import java.io.BufferedOutputStream;
import java.io.ByteArrayInputStream;
import java.io.EOFException;
import java.io.IOException;
import java.io.InputStream;
import java.io.InterruptedIOException;
import java.io.OutputStream;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.time.Duration;
import java.time.Instant;
import java.time.ZoneOffset;
import java.time.format.DateTimeFormatter;
import java.util.ArrayList;
import java.util.Base64;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.TreeMap;
import java.util.concurrent.ThreadLocalRandom;
import java.util.function.Supplier;
import javax.crypto.Mac;
import javax.crypto.spec.SecretKeySpec;
import org.apache.iceberg.exceptions.NotFoundException;
import org.apache.iceberg.exceptions.RuntimeIOException;
import org.apache.iceberg.io.BulkDeletionFailureException;
import org.apache.iceberg.io.FileInfo;
import org.apache.iceberg.io.InputFile;
import org.apache.iceberg.io.OutputFile;
import org.apache.iceberg.io.PositionOutputStream;
import org.apache.iceberg.io.SeekableInputStream;
import org.apache.iceberg.io.SupportsBulkOperations;
import org.apache.iceberg.io.SupportsPrefixOperations;
import org.w3c.dom.Element;

/**
 * A small S3 FileIO (path- or virtual-host style, AWS SigV4) on java.net.http, for Spark sessions
 * that have neither the AWS SDK nor hadoop-aws. When Iceberg's own S3FileIO can run (the
 * iceberg-aws-bundle is on the classpath), icebergdo uses that instead.
 *
 * <ul>
 *   <li>Reads are ranged GETs from the current position; a dropped connection reopens there.
 *   <li>Writes are spooled to local files of `s3.multipart.size` bytes. A file of at most
 *       `s3.multipart.threshold` × that size goes up in one PUT; a larger one as a multipart upload,
 *       each part sent as soon as it is full, aborted if anything fails, so a failed write never
 *       leaves an object behind.
 *   <li>Every request is retried with exponential backoff and jitter on connection errors, HTTP
 *       5xx and 429, and throttling codes (SlowDown, Throttling, RequestTimeout, ...), also when
 *       S3 reports them in a 200 answer to CompleteMultipartUpload. A request is signed anew for
 *       every attempt.
 *   <li>Deletes are batched: `DeleteObjects` with up to `s3.delete.batch-size` keys per request
 *       (SupportsBulkOperations, which Iceberg's expiry and orphan actions use).
 *   <li>Response XML is parsed with the JDK's DOM parser ({@link S3Xml}).
 * </ul>
 *
 * Properties, named as pyiceberg and Iceberg's S3FileIO name them: s3.endpoint, s3.region,
 * s3.access-key-id, s3.secret-access-key, s3.session-token, s3.force-virtual-addressing,
 * s3.connect-timeout (seconds), s3.multipart.size (bytes, default 32 MiB; S3 wants at least
 * 5 MiB), s3.multipart.threshold (factor, default 1.5), s3.retry.num-retries (default 5),
 * s3.retry.min-wait-ms (default 200), s3.retry.max-wait-ms (default 20000),
 * s3.delete.batch-size (default 250, at most 1000).
 */
public class IcebergdoS3FileIO implements SupportsPrefixOperations, SupportsBulkOperations {
  private static final long serialVersionUID = 2L;
  static final String EMPTY_SHA = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
  private static final DateTimeFormatter AMZ_DATE =
      DateTimeFormatter.ofPattern("yyyyMMdd'T'HHmmss'Z'").withZone(ZoneOffset.UTC);
  private static final Set<String> RETRY_CODES =
      Set.of("SlowDown", "Throttling", "ThrottlingException", "RequestThrottled", "TooManyRequests",
          "RequestTimeout", "RequestTimeTooSkewed", "InternalError", "ServiceUnavailable");
  private static final Duration REQUEST_TIMEOUT = Duration.ofMinutes(5);

  private Map<String, String> props = new HashMap<>();
  private transient HttpClient client;

  /** For DeleteOrphanFiles.deleteWith in a dry run: report, delete nothing. */
  public static java.util.function.Consumer<String> noopDelete() {
    return path -> { };
  }

  @Override public void initialize(Map<String, String> properties) { props = new HashMap<>(properties); }
  @Override public Map<String, String> properties() { return props; }

  // -- settings ---------------------------------------------------------------------------------
  private String prop(String key, String env) {
    String v = props.get(key);
    if ((v == null || v.isEmpty()) && env != null) v = System.getenv(env);
    return (v == null || v.isEmpty()) ? null : v;
  }

  private long longProp(String key, long fallback) {
    String v = props.get(key);
    return v == null || v.isBlank() ? fallback : Long.parseLong(v.trim());
  }

  private String region() {
    String r = prop("s3.region", "AWS_REGION");
    if (r == null) r = prop("client.region", null);
    return r == null ? "us-east-1" : r;
  }

  long partSize() { return Math.max(1L, longProp("s3.multipart.size", 32L << 20)); }

  long multipartThreshold() {
    String v = props.get("s3.multipart.threshold");
    double factor = v == null || v.isBlank() ? 1.5 : Double.parseDouble(v.trim());
    return (long) Math.max(1.0, factor * partSize());
  }

  int numRetries() { return (int) Math.max(0L, longProp("s3.retry.num-retries", 5L)); }
  int deleteBatchSize() { return (int) Math.min(1000L, Math.max(1L, longProp("s3.delete.batch-size", 250L))); }

  private synchronized HttpClient http() {
    if (client == null) {
      String connect = prop("s3.connect-timeout", null);
      long connectMs = connect == null ? 30_000L : (long) (Double.parseDouble(connect) * 1000);
      client = HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1)
          .connectTimeout(Duration.ofMillis(Math.max(1000L, connectMs))).build();
    }
    return client;
  }

  // -- signing ----------------------------------------------------------------------------------
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

  static String sha256(List<Path> files) throws IOException {
    try {
      MessageDigest md = MessageDigest.getInstance("SHA-256");
      byte[] buf = new byte[1 << 16];
      for (Path file : files) {
        try (InputStream in = Files.newInputStream(file)) {
          for (int n; (n = in.read(buf)) > 0; ) md.update(buf, 0, n);
        }
      }
      return hex(md.digest());
    } catch (java.security.NoSuchAlgorithmException e) { throw new IllegalStateException(e); }
  }

  /** A signed request for `method` on bucket/key with the given (unencoded) query parameters. */
  HttpRequest.Builder request(String method, String bucket, String key, Map<String, String> query, String payloadSha) {
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
    for (Map.Entry<String, String> e : new TreeMap<>(query).entrySet()) {
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
        .timeout(REQUEST_TIMEOUT);
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

  private static Map<String, String> query(String... kv) {
    Map<String, String> q = new LinkedHashMap<>();
    for (int i = 0; i < kv.length; i += 2) q.put(kv[i], kv[i + 1]);
    return q;
  }

  // -- sending with retries -----------------------------------------------------------------------
  static boolean retriable(int status, String code) {
    if (code != null && RETRY_CODES.contains(code)) return true;
    return status == 429 || status == 500 || status == 502 || status == 503 || status == 504;
  }

  /** Exponential backoff with full jitter, at least `Retry-After` when the server sent one. */
  long backoffMs(int attempt, Optional<String> retryAfter) {
    long min = Math.max(1L, longProp("s3.retry.min-wait-ms", 200L));
    long max = Math.max(min, longProp("s3.retry.max-wait-ms", 20_000L));
    long ceiling = Math.min(max, min << Math.min(attempt, 20));
    long wait = min + ThreadLocalRandom.current().nextLong(Math.max(1L, ceiling - min + 1));
    if (retryAfter.isPresent()) {
      try { wait = Math.max(wait, Math.min(max, Long.parseLong(retryAfter.get().trim()) * 1000L)); } catch (NumberFormatException e) { /* a date: ignore */ }
    }
    return wait;
  }

  private static void sleep(long ms, String what) {
    try {
      Thread.sleep(ms);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      throw new RuntimeIOException(new InterruptedIOException(what + " interrupted"));
    }
  }

  /**
   * Send the request `build` makes (anew for every attempt) until it succeeds, fails for good, or
   * the retries run out. Returns 2xx answers, and 404/416 (the caller decides what they mean);
   * throws for everything else. With `errorIn200`, a 200 whose body is an S3 error document is a
   * failure too (CompleteMultipartUpload reports errors that way).
   */
  HttpResponse<InputStream> execute(String what, String location, Supplier<HttpRequest> build, boolean errorIn200) {
    int attempts = numRetries() + 1;
    for (int attempt = 0; ; attempt++) {
      HttpResponse<InputStream> resp;
      try {
        resp = http().send(build.get(), HttpResponse.BodyHandlers.ofInputStream());
      } catch (IOException e) {
        if (attempt + 1 >= attempts) throw new RuntimeIOException(e, "%s %s failed after %d attempts", what, location, attempt + 1);
        sleep(backoffMs(attempt, Optional.empty()), what);
        continue;
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
        throw new RuntimeIOException(new InterruptedIOException(what + " " + location));
      }
      int status = resp.statusCode();
      if (status == 404 || status == 416) return resp;
      String body = null;
      String code = null;
      if (status / 100 == 2) {
        if (!errorIn200) return resp;
        body = readBody(resp.body());
        code = S3Xml.errorCode(body);
        if (code == null) return withBody(resp, body);
      } else {
        body = readBody(resp.body());
        code = S3Xml.errorCode(body);
      }
      if (retriable(status, code) && attempt + 1 < attempts) {
        sleep(backoffMs(attempt, resp.headers().firstValue("retry-after")), what);
        continue;
      }
      throw failure(what, location, status, code, body, attempt + 1);
    }
  }

  private static HttpResponse<InputStream> withBody(HttpResponse<InputStream> resp, String body) {
    InputStream replay = new ByteArrayInputStream(body.getBytes(StandardCharsets.UTF_8));
    return new HttpResponse<>() {
      @Override public int statusCode() { return resp.statusCode(); }
      @Override public HttpRequest request() { return resp.request(); }
      @Override public Optional<HttpResponse<InputStream>> previousResponse() { return resp.previousResponse(); }
      @Override public java.net.http.HttpHeaders headers() { return resp.headers(); }
      @Override public InputStream body() { return replay; }
      @Override public Optional<javax.net.ssl.SSLSession> sslSession() { return resp.sslSession(); }
      @Override public URI uri() { return resp.uri(); }
      @Override public HttpClient.Version version() { return resp.version(); }
    };
  }

  static RuntimeException failure(String what, String location, int status, String code, String body, int attempts) {
    if (status == 404) return new NotFoundException("%s: %s does not exist", what, location);
    String msg = body == null ? "" : body.length() > 300 ? body.substring(0, 300) : body;
    return new RuntimeIOException("%s %s: HTTP %d %s(after %d attempt%s) %s", what, location, status,
        code == null ? "" : code + " ", attempts, attempts == 1 ? "" : "s", msg);
  }

  static String readBody(InputStream in) {
    try (InputStream s = in) { return new String(s.readAllBytes(), StandardCharsets.UTF_8); } catch (IOException e) { return ""; }
  }

  // -- object operations ------------------------------------------------------------------------
  long head(String location) {
    String[] bk = split(location);
    HttpResponse<InputStream> resp = execute("HEAD", location,
        () -> request("HEAD", bk[0], bk[1], query(), EMPTY_SHA).method("HEAD", HttpRequest.BodyPublishers.noBody()).build(), false);
    readBody(resp.body());
    if (resp.statusCode() == 404) throw new NotFoundException("HEAD: %s does not exist", location);
    return resp.headers().firstValueAsLong("content-length").orElse(-1L);
  }

  InputStream get(String location, long from) {
    String[] bk = split(location);
    HttpResponse<InputStream> resp = execute("GET", location, () -> {
      HttpRequest.Builder rb = request("GET", bk[0], bk[1], query(), EMPTY_SHA).GET();
      if (from > 0) rb.header("Range", "bytes=" + from + "-");
      return rb.build();
    }, false);
    if (resp.statusCode() == 416) {
      readBody(resp.body());
      return new ByteArrayInputStream(new byte[0]);
    }
    if (resp.statusCode() == 404) {
      readBody(resp.body());
      throw new NotFoundException("GET: %s does not exist", location);
    }
    return resp.body();
  }

  /** One PUT of the concatenation of `files`. */
  void put(String location, List<Path> files) throws IOException {
    String[] bk = split(location);
    String sha = sha256(files);
    HttpResponse<InputStream> resp = execute("PUT", location,
        () -> request("PUT", bk[0], bk[1], query(), sha).PUT(body(files)).build(), false);
    readBody(resp.body());
    if (resp.statusCode() == 404) throw failure("PUT", location, 404, "NoSuchBucket", null, 1);
  }

  private static HttpRequest.BodyPublisher body(List<Path> files) {
    try {
      if (files.isEmpty()) return HttpRequest.BodyPublishers.noBody();
      if (files.size() == 1) return HttpRequest.BodyPublishers.ofFile(files.get(0));
      HttpRequest.BodyPublisher[] parts = new HttpRequest.BodyPublisher[files.size()];
      for (int i = 0; i < parts.length; i++) parts[i] = HttpRequest.BodyPublishers.ofFile(files.get(i));
      return HttpRequest.BodyPublishers.concat(parts);
    } catch (java.io.FileNotFoundException e) {
      throw new RuntimeIOException(e, "spool file vanished");
    }
  }

  String startMultipart(String location) {
    String[] bk = split(location);
    HttpResponse<InputStream> resp = execute("CreateMultipartUpload", location,
        () -> request("POST", bk[0], bk[1], query("uploads", ""), EMPTY_SHA).POST(HttpRequest.BodyPublishers.noBody()).build(), true);
    String xml = readBody(resp.body());
    if (resp.statusCode() / 100 != 2) throw failure("CreateMultipartUpload", location, resp.statusCode(), null, xml, 1);
    String id = S3Xml.text(S3Xml.parse(xml), "UploadId");
    if (id == null || id.isEmpty()) throw new RuntimeIOException("CreateMultipartUpload %s: no UploadId in %s", location, xml);
    return id;
  }

  String uploadPart(String location, String uploadId, int number, Path part) throws IOException {
    String[] bk = split(location);
    String sha = sha256(List.of(part));
    HttpResponse<InputStream> resp = execute("UploadPart", location,
        () -> request("PUT", bk[0], bk[1], query("partNumber", Integer.toString(number), "uploadId", uploadId), sha)
            .PUT(body(List.of(part))).build(), false);
    readBody(resp.body());
    if (resp.statusCode() / 100 != 2) throw failure("UploadPart", location, resp.statusCode(), "NoSuchUpload", null, 1);
    return resp.headers().firstValue("etag").orElseThrow(() -> new RuntimeIOException("UploadPart %s: no ETag", location));
  }

  void completeMultipart(String location, String uploadId, List<String> etags) {
    String[] bk = split(location);
    byte[] xml = S3Xml.completeMultipart(etags).getBytes(StandardCharsets.UTF_8);
    String sha = sha256(xml);
    HttpResponse<InputStream> resp = execute("CompleteMultipartUpload", location,
        () -> request("POST", bk[0], bk[1], query("uploadId", uploadId), sha).POST(HttpRequest.BodyPublishers.ofByteArray(xml)).build(), true);
    String answer = readBody(resp.body());
    if (resp.statusCode() / 100 != 2) throw failure("CompleteMultipartUpload", location, resp.statusCode(), "NoSuchUpload", answer, 1);
  }

  void abortMultipart(String location, String uploadId) {
    String[] bk = split(location);
    try {
      HttpResponse<InputStream> resp = execute("AbortMultipartUpload", location,
          () -> request("DELETE", bk[0], bk[1], query("uploadId", uploadId), EMPTY_SHA).DELETE().build(), false);
      readBody(resp.body());
    } catch (RuntimeException e) {
      // best effort: the bucket's lifecycle rule for incomplete uploads is the backstop
    }
  }

  @Override public InputFile newInputFile(String path) { return new S3InputFile(this, path, -1); }
  @Override public InputFile newInputFile(String path, long length) { return new S3InputFile(this, path, length); }
  @Override public OutputFile newOutputFile(String path) { return new S3OutputFile(this, path); }

  @Override
  public void deleteFile(String path) {
    String[] bk = split(path);
    HttpResponse<InputStream> resp = execute("DELETE", path, () -> request("DELETE", bk[0], bk[1], query(), EMPTY_SHA).DELETE().build(), false);
    readBody(resp.body());
  }

  /** DeleteObjects, `s3.delete.batch-size` keys per request; missing keys count as deleted. */
  @Override
  public void deleteFiles(Iterable<String> paths) throws BulkDeletionFailureException {
    Map<String, List<String>> byBucket = new LinkedHashMap<>();
    for (String path : paths) {
      String[] bk = split(path);
      byBucket.computeIfAbsent(bk[0], b -> new ArrayList<>()).add(bk[1]);
    }
    int failed = 0;
    int batch = deleteBatchSize();
    for (Map.Entry<String, List<String>> e : byBucket.entrySet()) {
      List<String> keys = e.getValue();
      for (int from = 0; from < keys.size(); from += batch) {
        failed += deleteBatch(e.getKey(), keys.subList(from, Math.min(keys.size(), from + batch)));
      }
    }
    if (failed > 0) throw new BulkDeletionFailureException(failed);
  }

  private int deleteBatch(String bucket, List<String> keys) {
    byte[] xml = S3Xml.deleteObjects(keys).getBytes(StandardCharsets.UTF_8);
    String sha = sha256(xml);
    String md5;
    try {
      md5 = Base64.getEncoder().encodeToString(MessageDigest.getInstance("MD5").digest(xml));
    } catch (java.security.NoSuchAlgorithmException ex) { throw new IllegalStateException(ex); }
    String where = "s3://" + bucket;
    HttpResponse<InputStream> resp = execute("DeleteObjects", where,
        () -> request("POST", bucket, "", query("delete", ""), sha).header("Content-MD5", md5)
            .header("Content-Type", "application/xml").POST(HttpRequest.BodyPublishers.ofByteArray(xml)).build(), false);
    String answer = readBody(resp.body());
    if (resp.statusCode() / 100 != 2) throw failure("DeleteObjects", where, resp.statusCode(), null, answer, 1);
    int failed = 0;
    if (!answer.isBlank()) {
      for (Element err : S3Xml.children(S3Xml.parse(answer), "Error")) {
        if (!"NoSuchKey".equals(S3Xml.text(err, "Code"))) failed++;
      }
    }
    return failed;
  }

  @Override
  public Iterable<FileInfo> listPrefix(String prefix) {
    String[] bk = split(prefix);
    String scheme = prefix.substring(0, prefix.indexOf("://"));
    List<FileInfo> out = new ArrayList<>();
    String token = null;
    do {
      Map<String, String> q = query("list-type", "2", "prefix", bk[1]);
      if (token != null) q.put("continuation-token", token);
      HttpResponse<InputStream> resp = execute("LIST", prefix, () -> request("GET", bk[0], "", q, EMPTY_SHA).GET().build(), false);
      String xml = readBody(resp.body());
      if (resp.statusCode() == 404) throw failure("LIST", prefix, 404, null, xml, 1);
      Element root = S3Xml.parse(xml);
      for (Element c : S3Xml.children(root, "Contents")) {
        String key = S3Xml.text(c, "Key");
        String size = S3Xml.text(c, "Size");
        String modified = S3Xml.text(c, "LastModified");
        long created;
        try { created = modified == null ? 0L : Instant.parse(modified).toEpochMilli(); } catch (Exception e) { created = 0L; }
        out.add(new FileInfo(scheme + "://" + bk[0] + "/" + key, size == null ? 0L : Long.parseLong(size), created));
      }
      token = "true".equals(S3Xml.text(root, "IsTruncated")) ? S3Xml.text(root, "NextContinuationToken") : null;
    } while (token != null);
    return out;
  }

  @Override
  public void deletePrefix(String prefix) {
    List<String> paths = new ArrayList<>();
    for (FileInfo f : listPrefix(prefix)) paths.add(f.location());
    deleteFiles(paths);
  }

  // -- files and streams ------------------------------------------------------------------------
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
    /** A connection dropped mid-body: reopen at the current position, as often as a request is retried. */
    private void reopen(IOException e, int failures) throws IOException {
      if (failures > io.numRetries()) throw e;
      try { in.close(); } catch (IOException ignored) { /* already broken */ }
      in = null;
      sleep(io.backoffMs(failures - 1, Optional.empty()), "GET " + location);
    }
    @Override public int read() throws IOException {
      for (int failures = 1; ; failures++) {
        position();
        try {
          int b = in.read();
          if (b >= 0) { pos++; next++; }
          return b;
        } catch (IOException e) {
          reopen(e, failures);
        }
      }
    }
    @Override public int read(byte[] buf, int off, int len) throws IOException {
      for (int failures = 1; ; failures++) {
        position();
        try {
          int n = in.read(buf, off, len);
          if (n > 0) { pos += n; next += n; }
          return n;
        } catch (IOException e) {
          reopen(e, failures);
        }
      }
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

  /**
   * Spools to local chunk files of `s3.multipart.size` bytes. Up to the threshold nothing is sent
   * before close() (one PUT); past it a multipart upload starts and every full chunk is sent as a
   * part and deleted, so at most about two chunks sit on local disk whatever the file's size.
   */
  static class S3Out extends PositionOutputStream {
    private final IcebergdoS3FileIO io;
    private final String location;
    private final long partSize;
    private final long threshold;
    private final List<Path> pending = new ArrayList<>();
    private final List<String> etags = new ArrayList<>();
    private Path current;
    private OutputStream out;
    private long inCurrent;
    private long pos;
    private String uploadId;
    private boolean closed;

    S3Out(IcebergdoS3FileIO io, String location) throws IOException {
      this.io = io;
      this.location = location;
      this.partSize = io.partSize();
      this.threshold = io.multipartThreshold();
      openChunk();
    }

    private void openChunk() throws IOException {
      current = Files.createTempFile("icebergdo-s3-", ".part");
      out = new BufferedOutputStream(Files.newOutputStream(current), 1 << 16);
      inCurrent = 0;
    }

    @Override public long getPos() { return pos; }

    @Override public void write(int b) throws IOException {
      out.write(b);
      pos++;
      if (++inCurrent >= partSize) rollChunk();
    }

    @Override public void write(byte[] b, int off, int len) throws IOException {
      while (len > 0) {
        int n = (int) Math.min(len, partSize - inCurrent);
        out.write(b, off, n);
        off += n;
        len -= n;
        pos += n;
        inCurrent += n;
        if (inCurrent >= partSize) rollChunk();
      }
    }

    @Override public void flush() throws IOException { out.flush(); }

    private void rollChunk() throws IOException {
      out.close();
      pending.add(current);
      openChunk();
      if (uploadId == null && pos > threshold) uploadId = io.startMultipart(location);
      if (uploadId != null) sendPending();
    }

    private void sendPending() throws IOException {
      for (Path part : pending) {
        etags.add(io.uploadPart(location, uploadId, etags.size() + 1, part));
        Files.deleteIfExists(part);
      }
      pending.clear();
    }

    @Override public void close() throws IOException {
      if (closed) return;
      closed = true;
      boolean done = false;
      try {
        out.close();
        // The last chunk: sent unless it is empty and something else carries the bytes.
        if (inCurrent > 0 || (uploadId == null && pending.isEmpty())) pending.add(current);
        else Files.deleteIfExists(current);
        if (uploadId == null && pos > threshold) uploadId = io.startMultipart(location);
        if (uploadId != null) {
          sendPending();
          io.completeMultipart(location, uploadId, etags);
        } else {
          io.put(location, pending);
        }
        done = true;
      } finally {
        if (!done && uploadId != null) io.abortMultipart(location, uploadId);
        for (Path p : pending) Files.deleteIfExists(p);
        Files.deleteIfExists(current);
      }
    }
  }
}
