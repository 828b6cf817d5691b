# Session 16: would a static neuron order make the skipped rows contiguous?
# For each captured layer: the cascade's skip sets (stage 1: the 25% smallest |act|*mean|up|,
# mean from the calibration tokens; stage 2: the down rows of the 35% smallest |act*up|),
# on GPL-3 tokens, under three neuron orders fixed from the calibration tokens:
# natural (the model's), by skip frequency, and by the leading principal component of the
# skip indicators. Reported: the share of skipped rows that lie in runs of at least R
# consecutive skipped rows (R = 4, 8: 1.6 / 3.2 KB of SmolLM2's Q5_0 rows), mean over tokens.
import numpy as np, sys
N_FF = 1536
def load(p):
    d = np.fromfile(p, dtype=np.float32).reshape(-1, 2, N_FF)
    return d[:, 0, :].astype(np.float64), d[:, 1, :].astype(np.float64)
def skip_sets(A, U, mu, s1=0.25, s2=0.35):
    n = A.shape[1]; k1 = int(s1 * n); k2 = int(s2 * n)
    rows = np.arange(A.shape[0])[:, None]
    o = np.argsort(np.abs(A) * mu, axis=1)
    up = np.zeros(A.shape, bool); up[rows, o[:, :k1]] = True
    h = np.where(up, np.inf, np.abs(A * U))
    o2 = np.argsort(h, axis=1)
    down = up.copy(); down[rows, o2[:, :k2 - k1]] = True
    return up, down
def run_share(skip, R):
    # share of skipped entries lying in runs of >= R consecutive True, per row, averaged
    out = []
    for r in skip:
        x = np.concatenate([[0], r.astype(np.int8), [0]])
        d = np.diff(x); starts = np.where(d == 1)[0]; ends = np.where(d == -1)[0]
        L = ends - starts
        out.append(L[L >= R].sum() / max(1, L.sum()))
    return np.mean(out)
for L in sys.argv[1:]:
    Ac, Uc = load(f'/tmp/s14/exp/cal-L{L}.f32'); At, Ut = load(f'/tmp/s14/exp/gpl-L{L}.f32')
    Ac, Uc, At, Ut = Ac[1:], Uc[1:], At[1:], Ut[1:]
    mu = np.abs(Uc).mean(0)
    cu, cd = skip_sets(Ac, Uc, mu); tu, td = skip_sets(At, Ut, mu)
    orders = {'natural': np.arange(N_FF)}
    for name, c in (('up', cu), ('down', cd)):
        f = c.mean(0)
        orders[f'freq-{name}'] = np.argsort(-f)
        X = c - f; _, _, vt = np.linalg.svd(X[:2000], full_matrices=False)
        orders[f'pc1-{name}'] = np.argsort(vt[0])
    for set_name, t in (('up (25%)', tu), ('down (35%)', td)):
        line = f'L{L} {set_name}:'
        for oname, o in orders.items():
            if oname != 'natural' and set_name.split()[0] not in oname: continue
            s = t[:, o]
            line += f'  {oname} R>=4 {run_share(s, 4):.2f} R>=8 {run_share(s, 8):.2f}'
        # freq of the hottest-to-skip 10% of neurons
        f = t.mean(0); line += f'  | skip freq p10/p50/p90 {np.percentile(f,10):.2f}/{np.percentile(f,50):.2f}/{np.percentile(f,90):.2f}'
        print(line, flush=True)
