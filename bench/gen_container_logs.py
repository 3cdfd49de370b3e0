#!/usr/bin/env python3
"""Container log files of the real formats, for the docker / kubernetes input benchmarks.

Usage:
  gen_container_logs.py --kind docker|cri --from PLAIN.log --out PATH [--lines N] [--split-every 100]

Messages are the lines of PLAIN.log (the harness's gen_logs.py data: ~250-byte lines, each with
a unique seq). docker: json-file lines {"log":"...\\n","stream":"stdout","time":"..."} with
nanosecond times (Docker's encoding: <, >, & escaped as \\u003c...); cri:
`<time> <stream> F <message>`. Every --split-every-th message is written as two pieces (a
Docker piece without the trailing newline / a CRI `P` line, then the rest), so partial-line
joining is exercised; one in ten messages goes to stderr. The file holds exactly --lines
events once joined. Deterministic for the same input.
"""
import argparse
import json


def docker_line(msg, stream, t, end=True):
    log = json.dumps(msg + ("\n" if end else ""), ensure_ascii=False)
    log = log.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return '{"log":%s,"stream":"%s","time":"%s"}\n' % (log, stream, t)


def cri_line(msg, stream, t, tag="F"):
    return "%s %s %s %s\n" % (t, stream, tag, msg)


def stamp(i):
    # 2024-05-06T00:00:00Z plus i microseconds, with nanosecond digits like Docker writes.
    secs, us = divmod(i, 1_000_000)
    h, rem = divmod(secs, 3600)
    m, s = divmod(rem, 60)
    return "2024-05-06T%02d:%02d:%02d.%06d123Z" % (h % 24, m, s, us)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kind", choices=["docker", "cri"], required=True)
    ap.add_argument("--from", dest="src", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--lines", type=int, default=0, help="at most this many events (0: all)")
    ap.add_argument("--split-every", type=int, default=100)
    a = ap.parse_args()
    n = 0
    with open(a.src, encoding="utf-8") as src, open(a.out, "w", encoding="utf-8") as out:
        buf = []
        for line in src:
            if a.lines and n >= a.lines:
                break
            msg = line.rstrip("\n")
            stream = "stderr" if n % 10 == 9 else "stdout"
            t = stamp(n)
            split = a.split_every and n % a.split_every == 0 and len(msg) > 10
            if a.kind == "docker":
                if split:
                    buf.append(docker_line(msg[:10], stream, t, end=False))
                    buf.append(docker_line(msg[10:], stream, t))
                else:
                    buf.append(docker_line(msg, stream, t))
            else:
                if split:
                    buf.append(cri_line(msg[:10], stream, t, "P"))
                    buf.append(cri_line(msg[10:], stream, t))
                else:
                    buf.append(cri_line(msg, stream, t))
            n += 1
            if len(buf) >= 10000:
                out.write("".join(buf))
                buf.clear()
        out.write("".join(buf))
    print(f"{a.out}: {n} events")


if __name__ == "__main__":
    main()
