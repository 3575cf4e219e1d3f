package icebergdo;

import java.security.SecureRandom;

/**
 * ULIDs (26 characters of Crockford base32: 48 bits of milliseconds, then 80 random bits), the
 * file names the Python writers use (python-ulid), so Java-written files sort by creation time
 * next to them and can never collide with another writer's file.
 */
final class Ulid {
  private static final char[] ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ".toCharArray();
  private static final SecureRandom RANDOM = new SecureRandom();

  private Ulid() {}

  static String next() {
    return of(System.currentTimeMillis(), randomBytes());
  }

  private static byte[] randomBytes() {
    byte[] random = new byte[10];
    RANDOM.nextBytes(random);
    return random;
  }

  /** The ULID of `millis` and 10 random bytes: 10 characters of time, 16 of randomness. */
  static String of(long millis, byte[] random) {
    char[] out = new char[26];
    long time = millis;
    for (int i = 9; i >= 0; i--) {
      out[i] = ALPHABET[(int) (time & 31)];
      time >>>= 5;
    }
    long high = 0;
    long low = 0;
    for (int i = 0; i < 5; i++) {
      high = (high << 8) | (random[i] & 0xff);
      low = (low << 8) | (random[i + 5] & 0xff);
    }
    for (int i = 17; i >= 10; i--) {
      out[i] = ALPHABET[(int) (high & 31)];
      high >>>= 5;
    }
    for (int i = 25; i >= 18; i--) {
      out[i] = ALPHABET[(int) (low & 31)];
      low >>>= 5;
    }
    return new String(out);
  }
}
