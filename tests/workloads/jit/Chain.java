// A known Java call chain, hot for the wall-clock seconds given as the first argument:
// main → Chain.chainOuter → Chain.chainMiddle → Chain.leafHot. Run with
// -XX:CompileCommand=dontinline,Chain::* so the compiled code keeps each call as its own frame.
public class Chain {
    static double leafHot(int n) {
        double s = 0;
        for (int i = 0; i < n; i++) {
            s += Math.sqrt(i) * i;
        }
        return s;
    }

    static double chainMiddle(int n) {
        return leafHot(n) + 1;
    }

    static double chainOuter(int n) {
        return chainMiddle(n) + 1;
    }

    public static void main(String[] args) {
        long end = System.nanoTime() + (long) (Double.parseDouble(args[0]) * 1e9);
        double total = 0;
        while (System.nanoTime() < end) {
            total += chainOuter(100000);
        }
        if (total < 0) {
            System.out.println(total);
        }
    }
}
