// Retains 40 direct ByteBuffers of 4 MiB, made by makeBuffers, when a line arrives on stdin:
// the tracer attaches in between, after `jcmd PID Compiler.perfmap` wrote the perf map.
// makeBuffers is compiled before that (warmed on small buffers, every path taken).
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;

public class Retainer {
    static final List<ByteBuffer> kept = new ArrayList<>();

    static void makeBuffers(int count, int size, boolean keep) {
        for (int i = 0; i < count; i++) {
            ByteBuffer buffer = ByteBuffer.allocateDirect(size);
            buffer.put(0, (byte) i);
            if (keep) kept.add(buffer);
        }
    }

    public static void main(String[] args) throws Exception {
        for (int i = 0; i < 20000; i++) makeBuffers(1, 16, i % 2 == 0 && kept.size() < 8);
        kept.clear();
        System.out.println("ready");
        System.out.flush();
        System.in.read();
        makeBuffers(40, 4 << 20, true);
        System.out.println("kept " + kept.size());
        System.out.flush();
        System.exit(0);
    }
}
