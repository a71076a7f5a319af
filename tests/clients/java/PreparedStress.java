// pgjdbc stress client for Switchyard's integration tests.
//
// Run with the single-file source launcher:
//   java -cp /usr/share/java/postgresql.jar PreparedStress.java --host ... --port ...
//
// Opens --concurrency connections with pgjdbc's defaults (prepareThreshold=5:
// from the fifth execution of a statement on, the driver uses a named
// server-side prepared statement "S_n", kept in its per-connection cache
// across transactions) and runs --transactions transactions on each,
// checking every result; the final check compares row counts with what was
// committed.
//
// With --read-your-writes true, each connection instead runs in autocommit mode:
// each of its --transactions iterations inserts a row and at once reads it back
// (with the port of the server that answered); a read that misses the row just
// written is an error ("stale"). The RESULT line then also has
// `ports=<port>:<n>,...`.
//
// With --fetch-size N (N > 0), each transaction also reads `generate_series(1, 1000)`
// with setFetchSize(N): pgjdbc then executes the portal N rows at a time (Execute with a
// row limit, PortalSuspended between chunks); every row is checked, in order.
//
// Prints errors to stderr and, last on stdout, `RESULT ok=<n> errors=<n>`.
// Exit status is 0 only if there were no errors.

import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.TreeMap;
import java.util.concurrent.atomic.AtomicLong;

public class PreparedStress {
    static final String TABLE = "jdbc_stress";

    public static void main(String[] argv) throws Exception {
        Map<String, String> a = new HashMap<>();
        a.put("concurrency", "8");
        a.put("transactions", "100");
        a.put("read-your-writes", "false");
        a.put("fetch-size", "0");
        for (int i = 0; i + 1 < argv.length; i += 2) {
            a.put(argv[i].replaceFirst("^--", ""), argv[i + 1]);
        }
        String url = "jdbc:postgresql://" + a.get("host") + ":" + a.get("port") + "/" + a.get("dbname");
        Properties props = new Properties();
        props.setProperty("user", a.get("user"));
        props.setProperty("password", a.get("password"));
        props.setProperty("sslmode", "disable");
        props.setProperty("connectTimeout", "10");
        props.setProperty("ApplicationName", "jdbc-stress");
        int concurrency = Integer.parseInt(a.get("concurrency"));
        int transactions = Integer.parseInt(a.get("transactions"));

        try (Connection c = DriverManager.getConnection(url, props); Statement s = c.createStatement()) {
            s.execute("DROP TABLE IF EXISTS " + TABLE);
            s.execute("CREATE TABLE " + TABLE + " (client int NOT NULL, n int NOT NULL)");
        }

        AtomicLong ok = new AtomicLong();
        List<String> errors = Collections.synchronizedList(new ArrayList<>());
        Map<Integer, Long> ports = Collections.synchronizedMap(new TreeMap<>());
        boolean ryw = Boolean.parseBoolean(a.get("read-your-writes"));
        int fetchSize = Integer.parseInt(a.get("fetch-size"));
        List<Thread> threads = new ArrayList<>();
        for (int id = 0; id < concurrency; id++) {
            final int client = id;
            Thread t = new Thread(() -> {
                if (ryw) rywWorker(url, props, client, transactions, ok, errors, ports);
                else worker(url, props, client, transactions, fetchSize, ok, errors);
            });
            t.start();
            threads.add(t);
        }
        for (Thread t : threads) t.join();

        try (Connection c = DriverManager.getConnection(url, props); Statement s = c.createStatement();
             // On the primary (a hint for a read-routing proxy; a comment elsewhere): a new
             // session has no commit of its own that a replica would have to show.
             ResultSet rs = s.executeQuery("/* switchyard: primary */ SELECT count(*) FROM " + TABLE)) {
            rs.next();
            long rows = rs.getLong(1);
            if (rows != ok.get()) {
                errors.add("table has " + rows + " rows but " + ok.get() + " transactions committed");
            }
        }

        synchronized (errors) {
            for (int i = 0; i < Math.min(20, errors.size()); i++) System.err.println(errors.get(i));
        }
        StringBuilder portList = new StringBuilder();
        synchronized (ports) {
            for (Map.Entry<Integer, Long> e : ports.entrySet()) {
                portList.append(portList.length() == 0 ? " ports=" : ",").append(e.getKey()).append(':').append(e.getValue());
            }
        }
        System.out.println("RESULT ok=" + ok.get() + " errors=" + errors.size() + portList);
        System.exit(errors.isEmpty() ? 0 : 1);
    }

    static void worker(String url, Properties props, int client, int transactions, int fetchSize, AtomicLong ok,
                       List<String> errors) {
        try (Connection c = DriverManager.getConnection(url, props)) {
            c.setAutoCommit(false);
            for (int i = 0; i < transactions; i++) {
                try {
                    for (int k = 0; k < 3; k++) {
                        try (PreparedStatement ps = c.prepareStatement("SELECT ?::int + ?::int, ?::text")) {
                            ps.setInt(1, i);
                            ps.setInt(2, k);
                            ps.setString(3, "c" + client);
                            try (ResultSet rs = ps.executeQuery()) {
                                rs.next();
                                if (rs.getInt(1) != i + k || !rs.getString(2).equals("c" + client)) {
                                    throw new IllegalStateException("sum query returned " + rs.getInt(1) + "," + rs.getString(2)
                                        + ", expected " + (i + k) + ",c" + client);
                                }
                            }
                        }
                    }
                    try (PreparedStatement ps = c.prepareStatement("INSERT INTO " + TABLE + " (client, n) VALUES (?, ?)")) {
                        ps.setInt(1, client);
                        ps.setInt(2, i);
                        ps.executeUpdate();
                    }
                    try (PreparedStatement ps = c.prepareStatement("SELECT count(*) FROM " + TABLE + " WHERE client = ?")) {
                        ps.setInt(1, client);
                        try (ResultSet rs = ps.executeQuery()) {
                            rs.next();
                            if (rs.getLong(1) != i + 1) {
                                throw new IllegalStateException("client " + client + " sees " + rs.getLong(1)
                                    + " own rows in transaction " + i + ", expected " + (i + 1));
                            }
                        }
                    }
                    if (fetchSize > 0) {
                        readInChunks(c, fetchSize);
                    }
                    c.commit();
                    ok.incrementAndGet();
                } catch (SQLException | RuntimeException e) {
                    String state = e instanceof SQLException ? ((SQLException) e).getSQLState() + " " : "";
                    errors.add("client " + client + " transaction " + i + ": " + state + e.getMessage());
                    try {
                        c.rollback();
                    } catch (SQLException re) {
                        break;
                    }
                }
            }
        } catch (SQLException e) {
            errors.add("client " + client + ": " + e.getSQLState() + " " + e.getMessage());
        }
    }

    /** Reads 1..1000 with setFetchSize(fetchSize) and checks every row, in order. */
    static void readInChunks(Connection c, int fetchSize) throws SQLException {
        try (PreparedStatement ps = c.prepareStatement("SELECT i FROM generate_series(1, 1000) i")) {
            ps.setFetchSize(fetchSize);
            try (ResultSet rs = ps.executeQuery()) {
                int expected = 1;
                while (rs.next()) {
                    if (rs.getInt(1) != expected) {
                        throw new IllegalStateException("fetched row " + rs.getInt(1) + ", expected " + expected);
                    }
                    expected++;
                }
                if (expected != 1001) {
                    throw new IllegalStateException("fetched " + (expected - 1) + " rows, expected 1000");
                }
            }
        }
    }

    static void rywWorker(String url, Properties props, int client, int transactions, AtomicLong ok, List<String> errors,
                          Map<Integer, Long> ports) {
        try (Connection c = DriverManager.getConnection(url, props);
             PreparedStatement insert = c.prepareStatement("INSERT INTO " + TABLE + " (client, n) VALUES (?, ?)");
             PreparedStatement read = c.prepareStatement(
                 "SELECT count(*), inet_server_port() FROM " + TABLE + " WHERE client = ? AND n = ?")) {
            c.setAutoCommit(true);
            for (int i = 0; i < transactions; i++) {
                try {
                    insert.setInt(1, client);
                    insert.setInt(2, i);
                    insert.executeUpdate();
                    read.setInt(1, client);
                    read.setInt(2, i);
                    try (ResultSet rs = read.executeQuery()) {
                        rs.next();
                        int port = rs.getInt(2);
                        ports.merge(port, 1L, Long::sum);
                        if (rs.getLong(1) != 1) {
                            throw new IllegalStateException("stale read on port " + port + ": the row just written is missing");
                        }
                    }
                    ok.incrementAndGet();
                } catch (SQLException | RuntimeException e) {
                    String state = e instanceof SQLException ? ((SQLException) e).getSQLState() + " " : "";
                    errors.add("client " + client + " iteration " + i + ": " + state + e.getMessage());
                }
            }
        } catch (SQLException e) {
            errors.add("client " + client + ": " + e.getSQLState() + " " + e.getMessage());
        }
    }
}
