# The decode step's kernels as they ran inside the CUDA graph, from the timeline probe
# (native/cuda/probe.cuh, NIBBLE_CUDA_PROBE=file; bench/gpu/probe-run.sh runs it). A replayed
# graph's kernels keep their grid ids, so the file holds the last decode step: one record per
# block (grid id, entry, wait return, marks, exit; ns) and FILE.names, the launch names in
# order, the captured step's after the "CAPTURE" line.
# First table, per kernel of a layer (medians over the middle half of the layers, us):
#   lead: how long before the previous kernel's last block exited this one's first block entered
#   wait: from that exit to this kernel's first return from pdl_wait (the kernel boundary)
#   post: from that return to this kernel's last block exit; span = wait + post
# Second table, inside the kernels that mark their phases (probe.mark): per block, wait return
# -> mark 0 -> mark 1 -> mark 2 -> exit, for the median block and for the block that exited last.
#   python3 bench/gpu/probe.py FILE
import statistics, struct, sys

path = sys.argv[1]
data = open(path, 'rb').read()
names = open(path + '.names').read().split('\n')
cap = len(names) - 1 - names[::-1].index('CAPTURE')
seq = [n for n in names[cap + 1:] if n]
N = len(seq)
grids, blocks = {}, {}
for g, t0, tw, t1, m0, m1, m2, m3 in struct.iter_unpack('<8Q', data):
    e = grids.setdefault(g, [0, 1 << 63, 1 << 63, 0, 0])
    e[0] += 1
    e[1] = min(e[1], t0)
    if tw:
        e[2] = min(e[2], tw)
        e[3] = max(e[3], tw)
    e[4] = max(e[4], t1)
    blocks.setdefault(g, []).append((t0, tw, m0, m1, m2, t1))
order = sorted(grids.items(), key=lambda kv: kv[1][1])  # by first entry
step = order[-N:]  # the last replay's kernels
per = next((c for c in range(4, 10) if (N - 1) % c == 0 and (N - 1) // c in (12, 24, 36, 48)), 0)
if not per:
    sys.exit(f'{N} probed kernels: not a GPT-2 step of 12-48 layers')
layers = (N - 1) // per
mid = range(layers // 4, layers - layers // 4)
med = lambda v: statistics.median(v) / 1000
print(f'{N} probed kernels, {layers} layers x {per} and the LM head')
print(f'step (first entry to last exit) {(step[-1][1][4] - step[0][1][1]) / 1000:.1f} us')
print(f"{'kernel':<40}{'blocks':>7}{'lead':>7}{'wait':>7}{'post':>7}{'span':>7}")
tot = 0.0
for k in range(per):
    lead, wait, post, span = [], [], [], []
    for l in mid:
        i = l * per + k
        _, (n, t0, tw0, tw1, t1) = step[i]
        pe = step[i - 1][1][4]
        lead.append(pe - t0), wait.append(tw0 - pe), post.append(t1 - tw0), span.append(t1 - pe)
    tot += med(span)
    print(f'{seq[k][:40]:<40}{step[k][1][0]:7d}{med(lead):7.2f}{med(wait):7.2f}{med(post):7.2f}{med(span):7.2f}')
print(f"{'layer (sum of spans)':<40}{'':>28}{tot:7.2f}")
n, t0, tw0, _, t1 = step[-1][1]
print(f"{'head: ' + seq[-1][:34]:<40}{n:7d}{'':>7}{(tw0 - step[-2][1][4]) / 1000:7.2f}{(t1 - tw0) / 1000:7.2f}")


def phases(b):
    t0, tw, m0, m1, m2, t1 = b
    out, prev = [], tw
    for m in (m0, m1, m2, t1):
        out.append(m - prev if m else float('nan'))
        prev = m or prev
    return out


print(f"\n{'inside (us)':<34}{'median: w>m0':>13}{'m0>m1':>7}{'m1>m2':>7}{'>exit':>7}{'last: w>m0':>11}{'m0>m1':>7}{'m1>m2':>7}{'>exit':>7}")
for k in range(per):
    mids, lasts = [], []
    for l in mid:
        bs = [b for b in blocks[step[l * per + k][0]] if b[1]]
        ph = [phases(b) for b in bs]
        mids.append([statistics.median([p[j] for p in ph if p[j] == p[j]] or [float('nan')]) for j in range(4)])
        lasts.append(phases(max(bs, key=lambda b: b[5])))
    cols = [statistics.median(r[j] for r in mids) / 1000 for j in range(4)] + [statistics.median(r[j] for r in lasts) / 1000 for j in range(4)]
    print(f'{seq[k][:34]:<34}' + ''.join(f'{v:>{w}.2f}' for v, w in zip(cols, (13, 7, 7, 7, 11, 7, 7, 7))))
