package icebergdo;

import java.util.Map;
import org.apache.iceberg.TableMetadata;
import org.apache.iceberg.TableOperations;
import org.apache.iceberg.catalog.TableIdentifier;
import org.apache.iceberg.encryption.EncryptionManager;
import org.apache.iceberg.io.FileIO;
import org.apache.iceberg.io.LocationProvider;
import org.apache.iceberg.jdbc.JdbcCatalog;

/**
 * Iceberg's JdbcCatalog, plus the ADR layout for the tables icebergdo created.
 *
 * Iceberg picks a table's LocationProvider from its `write.location-provider.impl` property, and
 * every engine reads that property: naming a class only our jar has there would break every
 * other Java writer. So the layout is a property of this catalog instead: its table operations
 * hand out {@link AdrLocationProvider} (data files) and the `icebergdo.write.manifests.path`
 * folder (manifests, manifest lists) for tables in the ADR layout (see AdrLocationProvider#wanted; formerly: whose `write.py-location-provider.impl` is the
 * Python twin. Table metadata is never changed; a plain JdbcCatalog over the same database sees
 * the same tables and writes Iceberg's default layout under the same `write.data.path`.
 *
 * Catalog properties (besides JdbcCatalog's own):
 *   icebergdo.catalog-name       the name stored in the catalog rows, when the Spark catalog is
 *                                registered under another name (a second catalog for compaction)
 *   icebergdo.write.file-prefix  prefix of every data file this catalog's tables write
 */
public class IcebergdoJdbcCatalog extends JdbcCatalog {
  public static final String CATALOG_NAME_PROPERTY = "icebergdo.catalog-name";
  public static final String MANIFESTS_PATH_PROPERTY = "icebergdo.write.manifests.path";
  private String filePrefix = "";

  @Override
  public void initialize(String name, Map<String, String> properties) {
    this.filePrefix = properties.getOrDefault(AdrLocationProvider.FILE_PREFIX_PROPERTY, "");
    String stored = properties.get(CATALOG_NAME_PROPERTY);
    super.initialize(stored == null || stored.isEmpty() ? name : stored, properties);
  }

  @Override
  protected TableOperations newTableOps(TableIdentifier identifier) {
    return new AdrTableOperations(super.newTableOps(identifier), filePrefix);
  }

  /** The JdbcCatalog's table operations with the ADR data and manifest locations. */
  static final class AdrTableOperations implements TableOperations {
    private final TableOperations ops;
    private final String filePrefix;

    AdrTableOperations(TableOperations ops, String filePrefix) {
      this.ops = ops;
      this.filePrefix = filePrefix;
    }

    @Override public TableMetadata current() { return ops.current(); }
    @Override public TableMetadata refresh() { return ops.refresh(); }
    @Override public void commit(TableMetadata base, TableMetadata metadata) { ops.commit(base, metadata); }
    @Override public FileIO io() { return ops.io(); }
    @Override public EncryptionManager encryption() { return ops.encryption(); }
    @Override public long newSnapshotId() { return ops.newSnapshotId(); }
    @Override public boolean requireStrictCleanup() { return ops.requireStrictCleanup(); }

    @Override
    public TableOperations temp(TableMetadata uncommitted) {
      return new AdrTableOperations(ops.temp(uncommitted), filePrefix);
    }

    @Override
    public LocationProvider locationProvider() {
      TableMetadata meta = current();
      if (meta == null || !AdrLocationProvider.wanted(meta.properties())) {
        return ops.locationProvider();
      }
      return new AdrLocationProvider(meta.location(), meta.properties(), filePrefix);
    }

    /**
     * Manifests and manifest lists (`*.avro`) go to the manifests folder, as pyiceberg writes
     * them. A name without an extension is a probe for the folder (Spark's manifest rewrite asks
     * for "file" and writes next to it), so it gets the manifests folder too. Everything else
     * (statistics files) stays in the metadata folder.
     */
    @Override
    public String metadataFileLocation(String fileName) {
      TableMetadata meta = current();
      String manifests = meta == null ? null : meta.properties().get(MANIFESTS_PATH_PROPERTY);
      boolean manifestLike = fileName.endsWith(".avro") || fileName.indexOf('.') < 0;
      if (manifests != null && !manifests.isEmpty() && manifestLike && AdrLocationProvider.wanted(meta.properties())) {
        String folder = manifests.endsWith("/") ? manifests.substring(0, manifests.length() - 1) : manifests;
        return folder + "/" + fileName;
      }
      return ops.metadataFileLocation(fileName);
    }
  }
}
