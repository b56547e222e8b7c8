#!/usr/bin/env python3
"""Per-session heap at peak, by owner, from a heaptrack run of a server.

    heaptrack_print -f heaptrack.X.zst --print-peaks 0 --print-allocators 0 \
        --print-temporary 0 --print-leaks 0 --flamegraph-cost-type peak -F stacks.txt
    scripts/heap-breakdown.py stacks.txt SESSIONS

Each peak stack is given to the first owner whose markers one of its frames
contains (fat LTO inlines a lot, so the markers are the frames that
survive it). docs/performance.md section 10 has its output for the floor
server and thin_floor.
"""
import re,collections,sys
def clean(f):
    f=re.sub(r' \([^)]*\)$','',f)
    f=f.replace('$LT$','<').replace('$GT$','>').replace('$u20$',' ').replace('$u7b$','{').replace('$u7d$','}').replace('..','::').replace('$RF$','&').replace('$C$',',')
    return re.sub(r'::h[0-9a-f]{16}','',f)
RULES=[
 ('quinn: connection (ConnectionSet::insert: ConnectionRef with quinn_proto::Connection state, event channel, driver task)', ['ConnectionSet::insert']),
 ('rustls: QUIC packet keys (1-RTT both ways + next phase)', ['packet_key']),
 ('rustls: header protection keys', ['header_protection_key']),
 ('rustls: TLS record encrypter/decrypter (kept after the handshake)', ['AeadAlgorithm::encrypter','AeadAlgorithm::decrypter']),
 ('rustls: ServerConnection state', ['start_session','rustls::']),
 ('quinn-proto: sent-packet tracking', ['finish_and_track','on_packet_acked','PathData::sent']),
 ('quinn: send buffer of the connection driver (drive_transmit)', ['State::drive_transmit']),
 ('quinn-proto: stream/crypto reassembly (Assembler)', ['Assembler::insert','read_crypto']),
 ('quinn-proto: crypto frames out', ['write_crypto']),
 ('quinn-proto: streams state', ['StreamsState','process_payload']),
 ('quinn: stream send buffers (write_all)', ['SendStream::write_all','SendStream::write']),
 ('tokio: spawned tasks (task cells: our session task; floor: also wtransport worker + per-stream tasks)', ['tokio::task::spawn::spawn_inner']),
 ('quinn endpoint: per-connection tables (CIDs, slab)', ['quicmatch::webtransport::endpoint','quinn::endpoint','Endpoint::accept','add_connection','issue_first_cids','update_rem_cid']),
 ('wtransport: per-connection channels and driver state', ['wtransport::']),
 ('webtransport layer + thin_floor (handshake, H3 buffers, Slot, decoder)', ['thin_floor::serve','webtransport']),
 ('quinn-proto: other', ['quinn_proto']),
 ('quinn: send buffer of the connection driver (drive_transmit)', ['ConnectionDriver as core::future::future::Future>::poll']),
 ('quinn: other', ['quinn::']),
]
agg=collections.Counter(); other=collections.Counter()
for line in open(sys.argv[1]):
    stack,_,n=line.rstrip('\n').rpartition(' ')
    n=int(n); fr=[clean(f) for f in stack.split(';')]
    joined=';'.join(fr)
    for name,keys in RULES:
        if any(k in joined for k in keys):
            agg[name]+=n; break
    else:
        agg['other']+=n; other[' <- '.join(reversed(fr[-4:]))]+=n
sessions=int(sys.argv[2])
tot=sum(agg.values())
print(f"peak heap {tot/1e6:.1f} MB, {tot/sessions/1024:.1f} KiB per session incl. the idle process")
for k,v in agg.most_common():
    print(f"{v/sessions/1024:6.2f} KiB  {k}")
for k,v in other.most_common(5): print('   other:',v/sessions,k[:200])
