package icebergdo;

import java.time.Instant;
import java.time.ZoneOffset;
import java.time.format.DateTimeFormatter;
import java.util.List;
import java.util.Map;
import org.apache.iceberg.PartitionField;
import org.apache.iceberg.PartitionSpec;
import org.apache.iceberg.StructLike;
import org.apache.iceberg.TableProperties;
import org.apache.iceberg.io.LocationProvider;
import org.apache.iceberg.types.Type;
import org.apache.iceberg.types.Types;

/**
 * The ADR-0002 data layout for Java writers: the twin of Python's
 * `icebergdo.layout.AdrLocationProvider`, path for path.
 *
 * <pre>
 *   {write.data.path}/{YYYY}/{MM}/{DD}/{HH}/{prefix}{ulid}.{ext}   hour partitions (events.raw)
 *   {write.data.path}/{YYYY}/{MM}/{DD}/{prefix}{ulid}.{ext}        day partitions (CDC change logs)
 *   {write.data.path}/{field}={value}/{prefix}{ulid}.{ext}         any other transform
 * </pre>
 *
 * It is never written into a table's properties: an engine without this class would then fail
 * to write at all. Our catalog ({@link IcebergdoJdbcCatalog}) hands it out for the tables in the
 * ADR layout ({@link #wanted}), so only our own sessions use it; other
 * Java engines keep Iceberg's default layout under the same `write.data.path`.
 *
 * `prefix` is `icebergdo.write.file-prefix` (`_compact-` for compaction outputs), a property of
 * the catalog that loaded the table, never process state.
 */
public class AdrLocationProvider implements LocationProvider {
  private static final long serialVersionUID = 1L;
  public static final String PYTHON_IMPL_PROPERTY = "write.py-location-provider.impl";
  public static final String PYTHON_IMPL = "icebergdo.layout.AdrLocationProvider";
  public static final String FILE_PREFIX_PROPERTY = "icebergdo.write.file-prefix";
  private static final DateTimeFormatter HOUR =
      DateTimeFormatter.ofPattern("yyyy/MM/dd/HH").withZone(ZoneOffset.UTC);
  private static final DateTimeFormatter DAY =
      DateTimeFormatter.ofPattern("yyyy/MM/dd").withZone(ZoneOffset.UTC);

  private final String dataPath;
  private final String filePrefix;

  /** The constructor Iceberg's `LocationProviders` would call (location, table properties). */
  public AdrLocationProvider(String tableLocation, Map<String, String> properties) {
    this(tableLocation, properties, properties.getOrDefault(FILE_PREFIX_PROPERTY, ""));
  }

  public AdrLocationProvider(String tableLocation, Map<String, String> properties, String filePrefix) {
    String data = properties.get(TableProperties.WRITE_DATA_LOCATION);
    if (data == null || data.isEmpty()) {
      data = stripSlash(tableLocation) + "/data";
    }
    this.dataPath = stripSlash(data);
    this.filePrefix = filePrefix == null ? "" : filePrefix;
  }

  /**
   * Does this table follow the ADR layout? The twin of Python's `layout.is_adr_table`: it has our
   * manifests folder property (every table icebergdo or its REST catalog creates), or the Python
   * provider's property tables made before that carried. A table naming a Java provider of its own keeps it.
   */
  public static boolean wanted(Map<String, String> properties) {
    boolean ours = properties.containsKey(IcebergdoJdbcCatalog.MANIFESTS_PATH_PROPERTY)
        || PYTHON_IMPL.equals(properties.get(PYTHON_IMPL_PROPERTY));
    return ours && !properties.containsKey(TableProperties.WRITE_LOCATION_PROVIDER_IMPL);
  }

  private static String stripSlash(String path) {
    String p = path;
    while (p.endsWith("/")) {
      p = p.substring(0, p.length() - 1);
    }
    return p;
  }

  /** `{prefix}{ulid}.{ext}`, the extension taken from the engine's own file name. */
  String fileName(String engineFileName) {
    int dot = engineFileName.lastIndexOf('.');
    String ext = dot >= 0 ? engineFileName.substring(dot + 1) : "parquet";
    return filePrefix + Ulid.next() + "." + ext;
  }

  @Override
  public String newDataLocation(String filename) {
    return dataPath + "/" + fileName(filename);
  }

  @Override
  public String newDataLocation(PartitionSpec spec, StructLike partitionData, String filename) {
    String folder = partitionDir(spec, partitionData);
    return folder.isEmpty() ? newDataLocation(filename) : dataPath + "/" + folder + "/" + fileName(filename);
  }

  /** The folder of one partition: hour → YYYY/MM/DD/HH, day → YYYY/MM/DD, others → name=value. */
  public static String partitionDir(PartitionSpec spec, StructLike partition) {
    if (spec == null || partition == null || spec.fields().isEmpty()) {
      return "";
    }
    List<Types.NestedField> types = spec.partitionType().fields();
    Class<?>[] classes = spec.javaClasses();
    StringBuilder out = new StringBuilder();
    for (int i = 0; i < spec.fields().size(); i++) {
      PartitionField field = spec.fields().get(i);
      Object value = partition.get(i, classes[i]);
      if (out.length() > 0) {
        out.append('/');
      }
      String transform = field.transform().toString();
      if (value == null) {
        out.append(field.name()).append("=null");
      } else if ("hour".equals(transform)) {
        out.append(HOUR.format(Instant.ofEpochSecond(((Number) value).longValue() * 3600L)));
      } else if ("day".equals(transform)) {
        out.append(DAY.format(Instant.ofEpochSecond(((Number) value).longValue() * 86400L)));
      } else if (field.transform().isIdentity()) {
        out.append(field.name()).append('=').append(value);
      } else {
        out.append(field.name()).append('=').append(human(field, types.get(i).type(), value));
      }
    }
    return out.toString();
  }

  @SuppressWarnings("unchecked")
  private static String human(PartitionField field, Type type, Object value) {
    return ((org.apache.iceberg.transforms.Transform<Object, Object>) field.transform()).toHumanString(type, value);
  }
}
