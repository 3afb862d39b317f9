"""What the two peers of `blip2 bench` (hf_peer.py, torch_peer.py) share: the
timing rule and the output format, so that their numbers read like blip2's."""
import json
import statistics
import time


def median_ms(repeats, f):
    """Median wall time of `repeats` calls of f after one warm-up call, in ms."""
    f()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def report(result, as_json):
    """One JSON object with blip2 bench's keys, or one `key value` line each."""
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        for k, val in result.items():
            print(f"{k:18} {val}")
