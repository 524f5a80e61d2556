"""`pulseup-agent devserver [serve|token|call|events] ...`: run or talk to the dev control plane.

`serve` (the default) runs the server in this process; the other subcommands are small HTTP
clients that read the admin token and the CA from the data directory.
"""

import argparse
import json
import os
import sys

from agent import log, values

DEFAULT_DATA_DIR = "./.pulseup-dev"
DEFAULT_LISTEN = "127.0.0.1:8765"


def _duration(text):
    try:
        return values.parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def build_parser():
    parser = argparse.ArgumentParser(prog="pulseup-agent devserver",
                                     description="PulseUp development control plane")
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR,
                        help="CA, tokens and agent state (default %(default)s)")
    parser.add_argument("--listen", default=DEFAULT_LISTEN,
                        help="HOST:PORT for HTTPS and WebSocket (default %(default)s)")
    parser.add_argument("--cert-lifetime", type=_duration, default=86400.0,
                        help="agent certificate lifetime: seconds or 90s/5m/1h (default 24h)")
    parser.add_argument("--auth-timeout", type=_duration, default=30.0, help=argparse.SUPPRESS)
    parser.add_argument("--log-level", default="INFO")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="run the server (default)")
    token = sub.add_parser("token", help="issue a join token")
    token.add_argument("--ttl", type=_duration, default=3600.0)
    call = sub.add_parser("call", help="send a call to a connected agent and print the reply")
    call.add_argument("server_uid")
    call.add_argument("event")
    call.add_argument("data", nargs="?", default=None, help="JSON request data")
    call.add_argument("--timeout", type=_duration, default=30.0)
    events = sub.add_parser("events", help="print the agent's frames as they arrive")
    events.add_argument("server_uid")
    sub.add_parser("agents", help="list enrolled and connected agents")
    return parser


def main(argv):
    args = build_parser().parse_args(argv)
    command = args.command or "serve"
    if command == "serve":
        return serve(args)
    client = _Client(args)
    try:
        return {"token": client.token, "call": client.call, "events": client.events,
                "agents": client.agents}[command](args)
    except ClientError as e:
        print("devserver: %s" % e, file=sys.stderr)
        return 1


# serve -----------------------------------------------------------------------------------

def serve(args):
    from gevent import monkey
    if not monkey.is_module_patched("socket"):
        monkey.patch_all()
    from agent.devserver.server import DevServer

    log.setup(args.log_level, "text")
    server = DevServer(args.data_dir, args.listen, cert_lifetime=args.cert_lifetime,
                       auth_timeout=args.auth_timeout).start()
    print(banner(server, server.create_token()), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


def banner(server, token):
    env = "WEBSOCKET_URL=%s JOIN_TOKEN=%s ENROLL_CA_PIN=%s" % (server.ws_url, token,
                                                              server.ca_pin)
    return "\n".join([
        "PulseUp dev server",
        "URL=%s" % server.url,
        "WEBSOCKET_URL=%s" % server.ws_url,
        "JOIN_TOKEN=%s" % token,
        "ENROLL_CA_PIN=%s" % server.ca_pin,
        "CA_FILE=%s" % server.ca_file,
        "ADMIN_TOKEN_FILE=%s" % os.path.join(server.data_dir, "admin.token"),
        "",
        "Web console: %s/ (log in with the token in ADMIN_TOKEN_FILE)" % server.url.rstrip("/"),
        "",
        "Start an agent against it:",
        "  %s pulseup-agent worker" % env,
    ])


# HTTP client subcommands -----------------------------------------------------------------

class ClientError(Exception):
    pass


class _Client:
    def __init__(self, args):
        host, _, port = args.listen.rpartition(":")
        host = "127.0.0.1" if host in ("", "0.0.0.0") else host
        self.base = "https://%s:%s" % (host, port)
        self.ca_file = os.path.join(args.data_dir, "ca.crt")
        try:
            with open(os.path.join(args.data_dir, "admin.token")) as f:
                self.headers = {"Authorization": "Bearer " + f.read().strip()}
        except OSError as e:
            raise ClientError("cannot read the admin token: %s" % e) from e

    def _request(self, method, path, body=None, timeout=60, stream=False):
        import requests
        try:
            resp = requests.request(method, self.base + path, json=body, headers=self.headers,
                                    verify=self.ca_file, timeout=timeout, stream=stream)
        except requests.RequestException as e:
            raise ClientError(str(e)) from e
        if resp.status_code != 200:
            raise ClientError("HTTP %d: %s" % (resp.status_code, resp.text.strip()))
        return resp

    def token(self, args):
        reply = self._request("POST", "/api/tokens", {"ttl_s": args.ttl}).json()
        print(reply["token"])
        return 0

    def agents(self, args):
        print(json.dumps(self._request("GET", "/api/agents").json(), indent=2))
        return 0

    def call(self, args):
        try:
            data = json.loads(args.data) if args.data else {}
        except ValueError as e:
            raise ClientError("data must be JSON: %s" % e) from e
        body = {"event": args.event, "data": data, "timeout_s": args.timeout}
        reply = self._request("POST", "/api/agents/%s/calls" % args.server_uid, body,
                              timeout=args.timeout + 10).json()
        print(json.dumps(reply, indent=2))
        return 0 if reply.get("success") else 1

    def events(self, args):
        resp = self._request("GET", "/api/agents/%s/events" % args.server_uid,
                             timeout=None, stream=True)
        try:
            for line in resp.iter_lines(decode_unicode=True):
                if line and not line.startswith(":"):
                    print(line, flush=True)
        except KeyboardInterrupt:
            pass
        return 0
