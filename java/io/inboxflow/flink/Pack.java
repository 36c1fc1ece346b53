package io.inboxflow.flink;

import java.nio.charset.StandardCharsets;
import java.util.Arrays;

/**
 * The few MessagePack types the batch payloads between {@link BatchCustomerOperator} and
 * {@code udfs.core.batch} use: arrays, integers, strings, binaries and nil. The writer always
 * uses the widest form of each type (valid MessagePack, simplest to write); the reader takes
 * every form msgspec may choose. No dependency: the JVM side of the job carries no MessagePack
 * library.
 */
final class Pack {
    private Pack() {
    }

    /** A growable output buffer. */
    static final class Writer {
        private byte[] buf;
        private int size;

        Writer(int capacity) {
            buf = new byte[Math.max(capacity, 16)];
        }

        int size() {
            return size;
        }

        void reset() {
            size = 0;
        }

        byte[] toByteArray() {
            return Arrays.copyOf(buf, size);
        }

        void append(Writer other) {
            ensure(other.size);
            System.arraycopy(other.buf, 0, buf, size, other.size);
            size += other.size;
        }

        void arrayHeader(int n) {
            ensure(5);
            buf[size++] = (byte) 0xdd;
            int32(n);
        }

        void nil() {
            ensure(1);
            buf[size++] = (byte) 0xc0;
        }

        void int64(long v) {
            ensure(9);
            buf[size++] = (byte) 0xd3;
            for (int shift = 56; shift >= 0; shift -= 8) {
                buf[size++] = (byte) (v >>> shift);
            }
        }

        /** A string as UTF-8 (an unpaired surrogate becomes '?', so the bytes are valid UTF-8). */
        void string(String s) {
            if (s == null) {
                nil();
                return;
            }
            byte[] bytes = s.getBytes(StandardCharsets.UTF_8);
            ensure(5 + bytes.length);
            buf[size++] = (byte) 0xdb;
            int32(bytes.length);
            System.arraycopy(bytes, 0, buf, size, bytes.length);
            size += bytes.length;
        }

        void binary(byte[] b) {
            if (b == null) {
                nil();
                return;
            }
            ensure(5 + b.length);
            buf[size++] = (byte) 0xc6;
            int32(b.length);
            System.arraycopy(b, 0, buf, size, b.length);
            size += b.length;
        }

        private void int32(int v) {
            buf[size++] = (byte) (v >>> 24);
            buf[size++] = (byte) (v >>> 16);
            buf[size++] = (byte) (v >>> 8);
            buf[size++] = (byte) v;
        }

        private void ensure(int more) {
            if (size + more > buf.length) {
                buf = Arrays.copyOf(buf, Math.max(buf.length * 2, size + more));
            }
        }
    }

    /** Reads one payload front to back; throws IllegalArgumentException on anything else. */
    static final class Reader {
        private final byte[] buf;
        private int pos;

        Reader(byte[] buf) {
            this.buf = buf;
        }

        boolean atEnd() {
            return pos == buf.length;
        }

        int arrayHeader() {
            int b = u8();
            if ((b & 0xf0) == 0x90) {
                return b & 0x0f;
            }
            if (b == 0xdc) {
                return u16();
            }
            if (b == 0xdd) {
                return length32();
            }
            throw unexpected("an array", b);
        }

        /** An integer, or null for nil. */
        Long int64OrNull() {
            int b = u8();
            if (b <= 0x7f) {
                return (long) b;
            }
            if (b >= 0xe0) {
                return (long) (byte) b;
            }
            switch (b) {
                case 0xc0: return null;
                case 0xcc: return (long) u8();
                case 0xcd: return (long) u16();
                case 0xce: return u32();
                case 0xcf: // uint64: msgspec writes it only above Long.MAX_VALUE, never here
                case 0xd3: return s64();
                case 0xd0: return (long) (byte) u8();
                case 0xd1: return (long) (short) u16();
                case 0xd2: return (long) (int) u32();
                default: throw unexpected("an integer", b);
            }
        }

        long int64() {
            Long v = int64OrNull();
            if (v == null) {
                throw new IllegalArgumentException("batch result: nil where an integer must be");
            }
            return v;
        }

        /** A string, or null for nil. */
        String stringOrNull() {
            int b = u8();
            int n;
            if ((b & 0xe0) == 0xa0) {
                n = b & 0x1f;
            } else if (b == 0xd9) {
                n = u8();
            } else if (b == 0xda) {
                n = u16();
            } else if (b == 0xdb) {
                n = length32();
            } else if (b == 0xc0) {
                return null;
            } else {
                throw unexpected("a string", b);
            }
            check(n);
            String s = new String(buf, pos, n, StandardCharsets.UTF_8);
            pos += n;
            return s;
        }

        /** Binary bytes, or null for nil. */
        byte[] binaryOrNull() {
            int b = u8();
            int n;
            if (b == 0xc4) {
                n = u8();
            } else if (b == 0xc5) {
                n = u16();
            } else if (b == 0xc6) {
                n = length32();
            } else if (b == 0xc0) {
                return null;
            } else {
                throw unexpected("binary", b);
            }
            check(n);
            byte[] out = Arrays.copyOfRange(buf, pos, pos + n);
            pos += n;
            return out;
        }

        private int u8() {
            check(1);
            return buf[pos++] & 0xff;
        }

        private int u16() {
            return (u8() << 8) | u8();
        }

        private long u32() {
            return ((long) u16() << 16) | u16();
        }

        private long s64() {
            return (u32() << 32) | u32();
        }

        private int length32() {
            long n = u32();
            if (n > Integer.MAX_VALUE) {
                throw new IllegalArgumentException("batch result: length " + n + " too large");
            }
            return (int) n;
        }

        private void check(int n) {
            if (n < 0 || pos + n > buf.length) {
                throw new IllegalArgumentException("batch result: truncated at byte " + pos);
            }
        }

        private IllegalArgumentException unexpected(String what, int b) {
            return new IllegalArgumentException(String.format(
                    "batch result: expected %s at byte %d, found type byte 0x%02x", what, pos - 1, b));
        }
    }
}
