# A stand-in for python:3.X-slim, for machines that reach no image registry: Debian's minimal system, the libraries
# and certificates the official image installs, and this machine's own CPython of that version under /usr/local,
# where the official image has its own. Built by tests/containers.py, which puts python.tar beside this file.
ARG BASE
FROM ${BASE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates netbase tzdata libssl3 libsqlite3-0 libffi8 \
      libbz2-1.0 liblzma5 zlib1g libreadline8 libncursesw6 libuuid1 libgdbm6 libexpat1 \
 && rm -rf /var/lib/apt/lists/*
ADD python.tar /usr/local/
# The machine's certificates (its package index may sit behind a proxy of its own) and its pip settings: they stay
# in this stand-in, never in the chapter's image
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY pip.conf /etc/pip.conf
# Scripts such as pip name the interpreter where it was built: name it where it is now
RUN ldconfig \
 && for f in /usr/local/bin/*; do \
      if [ -f "$f" ] && [ ! -L "$f" ] && head -c 2 "$f" | grep -q '#!'; then sed -i '1s|^#!.*/python|#!/usr/local/bin/python|' "$f"; fi; \
    done \
 && python3 -m pip --version
ENV LANG=C.UTF-8
CMD ["python3"]
