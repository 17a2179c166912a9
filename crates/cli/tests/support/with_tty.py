#!/usr/bin/env python3
"""Runs a command with a pseudo-terminal of its own as its controlling
terminal (/dev/tty), its standard streams left as they are, and answers
what it asks there: for the MCP gateway's terminal approver.

    with_tty.py TRANSCRIPT PROMPT ANSWER [PROMPT ANSWER ...] -- COMMAND ARGS...

Each time the terminal shows PROMPT, the next ANSWER is typed (with Enter).
Everything the terminal showed is written to TRANSCRIPT when the command
exits; the exit status is the command's.
"""
import os
import subprocess
import sys
import threading


def main():
    split = sys.argv.index("--")
    transcript_path, *pairs = sys.argv[1:split]
    command = sys.argv[split + 1:]
    answers = list(zip(pairs[0::2], pairs[1::2]))
    master, slave = os.openpty()
    slave_name = os.ttyname(slave)

    def become_session_leader():
        # A new session with no terminal; the first terminal it opens
        # becomes its controlling terminal.
        os.setsid()
        fd = os.open(slave_name, os.O_RDWR)
        os.close(fd)

    child = subprocess.Popen(command, preexec_fn=become_session_leader, pass_fds=())
    # `slave` stays open here: the terminal lives on between the command's
    # questions, when it has it open nowhere.
    shown = bytearray()

    def read_terminal():
        pending = list(answers)
        seen = 0
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                return
            if not chunk:
                return
            shown.extend(chunk)
            while pending:
                prompt, answer = pending[0]
                at = shown.find(prompt.encode(), seen)
                if at < 0:
                    break
                seen = at + len(prompt)
                os.write(master, (answer + "\n").encode())
                pending.pop(0)

    reader = threading.Thread(target=read_terminal, daemon=True)
    reader.start()
    status = child.wait()
    reader.join(timeout=1)
    with open(transcript_path, "wb") as transcript:
        transcript.write(bytes(shown))
    sys.exit(status)


main()
