#!/usr/bin/env python3
"""End-to-end throughput of logferry's loki and logstash outputs.

Generates 2,000,000 plain lines (~250 bytes, /work/shared/bench/gen_logs.py or
../shared/bench/gen_logs.py), starts a minimal local endpoint that acknowledges at once
(Loki push -> 204; a Lumberjack v2 server that acks every window), runs
`target/release/logferry run` with the file input reading the file from the beginning, waits
until the agent's /metrics say every line was sent, and reports the agent's CPU seconds
(user+sys from /proc/<pid>/stat), its peak RSS (VmHWM) and lines per CPU-second.

Usage (from the repository root, after `cargo build --release`):
    python3 bench/run_output_bench.py loki logstash logstash-z3 [--lines 2000000] [--runs 3]
"""

import argparse
import os
import pathlib
import signal
import socket
import socketserver
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = pathlib.Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")


class LokiSink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(n)
        self.send_response(204)
        self.end_headers()

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "5")
        self.end_headers()
        self.wfile.write(b"ready")

    def log_message(self, *args):
        pass


class LumberjackSink(socketserver.BaseRequestHandler):
    """Reads whole windows (2W, then 2J frames, plain or inside 2C) and acks each at once."""

    def handle(self):
        sock = self.request
        buf = bytearray()

        def need(k):
            while len(buf) < k:
                chunk = sock.recv(1 << 20)
                if not chunk:
                    raise EOFError
                buf.extend(chunk)

        try:
            while True:
                need(6)
                if buf[0:2] != b"2W":
                    return
                (n,) = struct.unpack_from(">I", buf, 2)
                del buf[:6]
                got = 0
                while got < n:
                    need(2)
                    kind = buf[1:2]
                    if kind == b"J":
                        need(10)
                        (ln,) = struct.unpack_from(">I", buf, 6)
                        need(10 + ln)
                        del buf[: 10 + ln]
                        got += 1
                    elif kind == b"C":
                        need(6)
                        (ln,) = struct.unpack_from(">I", buf, 2)
                        need(6 + ln)
                        inner = zlib.decompress(bytes(buf[6 : 6 + ln]))
                        del buf[: 6 + ln]
                        off = 0
                        while off < len(inner):
                            (ln2,) = struct.unpack_from(">I", inner, off + 6)
                            off += 10 + ln2
                            got += 1
                    else:
                        return
                sock.sendall(b"2A" + struct.pack(">I", n))
        except (EOFError, ConnectionError):
            return


class TcpServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gen_logs(work, lines):
    out = work / f"plain_{lines}.log"
    if not out.exists():
        for cand in [ROOT.parent / "shared/bench/gen_logs.py", pathlib.Path("/work/shared/bench/gen_logs.py")]:
            if cand.exists():
                subprocess.run([sys.executable, str(cand), "--kind", "plain", "--lines", str(lines), "--out", str(out)], check=True)
                break
        else:
            sys.exit("gen_logs.py not found")
    return out


def sent(api):
    try:
        text = urllib.request.urlopen(f"http://{api}/metrics", timeout=2).read().decode()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("logferry_output_events_total") and 'result="sent"' in line:
            return int(float(line.rsplit(" ", 1)[1]))
    return 0


def proc_cpu_rss(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / TICK  # utime + stime
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                rss = int(line.split()[1]) * 1024
    return cpu, rss


def run_once(scenario, logfile, lines, work, perf_dir=None):
    port = free_port()
    if scenario == "loki":
        server = ThreadingHTTPServer(("127.0.0.1", port), LokiSink)
        output = f"    type: loki\n    url: http://127.0.0.1:{port}\n    labels: {{ job: \"{{{{ input.id }}}}\", host: \"{{{{ host.name }}}}\" }}\n"
    else:
        server = TcpServer(("127.0.0.1", port), LumberjackSink)
        level = 3 if scenario == "logstash-z3" else 0
        output = f"    type: logstash\n    hosts: [\"127.0.0.1:{port}\"]\n    compression_level: {level}\n"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    api = f"127.0.0.1:{free_port()}"
    data = tempfile.mkdtemp(dir=work)
    cfg = pathlib.Path(data) / "agent.yaml"
    cfg.write_text(
        f"""data_dir: {data}/data
api: {{ listen: "{api}" }}
log: {{ level: warn }}
inputs:
  - id: bench
    type: file
    paths: ["{logfile}"]
    start_at: beginning
outputs:
  - id: out
{output}"""
    )
    t0 = time.monotonic()
    agent = subprocess.Popen([str(ROOT / "target/release/logferry"), "run", "-c", str(cfg)], stdout=subprocess.DEVNULL)
    perf = None
    if perf_dir:
        perf = subprocess.Popen(["perf", "record", "-F", "499", "-g", "-p", str(agent.pid), "-o",
                                 str(pathlib.Path(perf_dir) / f"{scenario}.perf.data")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = t0 + 600
        while sent(api) < lines:
            if agent.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"agent stopped or timed out at {sent(api)} lines")
            time.sleep(0.1)
        wall = time.monotonic() - t0
        cpu, rss = proc_cpu_rss(agent.pid)
    finally:
        if perf:
            perf.send_signal(signal.SIGINT)
            perf.wait(60)
        agent.send_signal(signal.SIGTERM)
        agent.wait(60)
        server.shutdown()
    return {"scenario": scenario, "lines": lines, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
            "lines_per_cpu_s": int(lines / cpu) if cpu else None, "peak_rss_mib": round(rss / 2**20, 1)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenarios", nargs="+", choices=["loki", "logstash", "logstash-z3"])
    ap.add_argument("--lines", type=int, default=2_000_000)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--perf", metavar="DIR", help="also record a perf profile of the agent into DIR")
    ap.add_argument("--work", default=os.environ.get("BENCH_WORK", os.path.join(tempfile.gettempdir(), "logferry-output-bench")))
    args = ap.parse_args()
    work = pathlib.Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    logfile = gen_logs(work, args.lines)
    for _ in range(args.runs):
        for sc in args.scenarios:
            print(run_once(sc, logfile, args.lines, work, args.perf), flush=True)


if __name__ == "__main__":
    main()
