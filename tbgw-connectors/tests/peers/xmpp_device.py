"""An XMPP device (slixmpp) for the XMPP parity scenario (tbgw-cli/tests/parity.rs).

usage: xmpp_device.py OPTIONS_JSON

OPTIONS_JSON keys:
  jid, password   the device's account (full JID: upstream matches devices by full JID)
  host, port      the server, plain TCP (loopback)
  to              the gateway's JID
  bodies          chat bodies sent to the gateway every `period` seconds (default 1), for ever:
                  upstream's XMPP loop only wakes for its own downlink when a message arrives
  answer          the body of the answer to a message that has a <thread/> (a two-way RPC)
Prints ONLINE once logged in, and GOT <body> for every chat message with a body it receives.
"""
import asyncio
import json
import sys

import slixmpp

opts = json.loads(sys.argv[1])


def out(*parts):
    print(*parts, flush=True)


class Device(slixmpp.ClientXMPP):
    def __init__(self):
        super().__init__(opts["jid"], opts["password"])
        self.add_event_handler("session_start", self.start)
        self.add_event_handler("message", self.on_message)

    async def start(self, _):
        self.send_presence()
        out("ONLINE")
        while True:
            for body in opts.get("bodies", []):
                self.send_message(mto=opts["to"], mbody=body, mtype="chat")
            await asyncio.sleep(opts.get("period", 1))

    def on_message(self, msg):
        if msg["type"] not in ("chat", "normal") or not msg["body"]:
            return
        out("GOT", msg["body"])
        if opts.get("answer") and msg["thread"]:
            reply = msg.reply(opts["answer"])
            reply["thread"] = msg["thread"]
            reply.send()


device = Device()
device["feature_mechanisms"].unencrypted_plain = True
device.connect(address=(opts["host"], opts["port"]), use_ssl=False, disable_starttls=True,
               force_starttls=False)
device.process(forever=True)
