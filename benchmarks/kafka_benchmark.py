"""Kafka read throughput: newsloom's source beside a plain kafka-python loop, same run.

    python benchmarks/kafka_benchmark.py --messages 100000 --end-to-end 5000

Starts a local broker (connectors.local_kafka), produces N messages of about
3 KB (JSON articles built from SIB-200 sentences) into a 3-partition topic,
then measures, each in a fresh process:

* ``plain``: a kafka-python consumer assigned to every partition, polling
  from the beginning to the end offsets;
* ``source``: newsloom's Kafka source alone (``ReadKafkaMessages``) on the
  FnApiRunner, counting the messages;
* ``source+parse``: the source and the parsing into articles (JSON, checks,
  content hash), counting the articles;
* ``end-to-end``: ``newsloom run`` from Kafka to Parquet on the first
  ``--end-to-end`` messages (language detection and duplicate search cost
  about 5-10 ms an article, so the whole topic would take many minutes).

It prints messages/s for each and its ratio to the plain loop, both with the
fixed start-up cost and in steady state (without it).
"""

import argparse
import csv
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEFAULT_SIB200 = ROOT.parent / "shared" / "data" / "sib200"
TOPIC = "bench"


def produce(bootstrap: str, sib200: Path, n: int) -> float:
    from kafka import KafkaProducer
    rng = random.Random(1)
    sentences = []
    for lang in ("eng_Latn", "spa_Latn", "fra_Latn", "deu_Latn", "rus_Cyrl", "arb_Arab"):
        with open(sib200 / lang / "train.tsv", encoding="utf-8") as f:
            sentences += [row["text"] for row in csv.DictReader(f, delimiter="\t")]
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=1 << 20)
    started = time.perf_counter()
    for i in range(n):
        body, size = [], 0
        while size < 2900:
            sentence = rng.choice(sentences)
            body.append(sentence)
            size += len(sentence.encode("utf-8")) + 1
        producer.send(TOPIC, key=f"m{i}".encode(),
                      value=json.dumps({"id": f"m{i}", "body": "\n".join(body)},
                                       ensure_ascii=False).encode("utf-8"))
    producer.flush()
    producer.close()
    return n / (time.perf_counter() - started)


def plain(bootstrap: str, limit: int) -> int:
    from kafka import KafkaConsumer, TopicPartition
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    tps = [TopicPartition(TOPIC, p) for p in consumer.partitions_for_topic(TOPIC)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    end = consumer.end_offsets(tps)
    count = 0
    while any(consumer.position(tp) < end[tp] for tp in tps):
        for records in consumer.poll(timeout_ms=1000, max_records=500).values():
            count += len(records)
    consumer.close()
    return count


def _count_on_fnapi(read) -> int:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "count"
        with beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"])) as p:
            _ = (read(p) | beam.combiners.Count.Globally()
                 | beam.Map(lambda n: result.write_text(str(n))))
        return int(result.read_text())


def source(bootstrap: str, start: str) -> int:
    from connectors.kafka_source import KafkaSpec, ReadKafkaMessages
    spec = KafkaSpec(bootstrap, TOPIC, start=start, stop="end")
    return _count_on_fnapi(lambda p: p | ReadKafkaMessages(spec))


def source_and_parse(bootstrap: str, start: str) -> int:
    from connectors.kafka_source import KafkaSpec, ReadKafkaArticles
    spec = KafkaSpec(bootstrap, TOPIC, start=start, stop="end")
    return _count_on_fnapi(lambda p: (p | ReadKafkaArticles(spec, 1 << 20, 1024)).articles)


def end_to_end(bootstrap: str, limit: int) -> int:
    from pipeline.graph import run
    with tempfile.TemporaryDirectory() as out:
        per_partition = -(-limit // 3)
        return run(["--bootstrap-servers", bootstrap, "--topic", TOPIC, "--start", "earliest",
                    "--stop", str(per_partition), "--output", out])["read"]


MODES = {"plain": plain, "source": source, "source+parse": source_and_parse,
         "end-to-end": end_to_end}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--end-to-end", type=int, default=5_000, dest="end_to_end")
    parser.add_argument("--sib200", type=Path, default=DEFAULT_SIB200)
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    parser.add_argument("--limit", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure = MODES[args.measure]
        if args.measure in ("plain", "end-to-end"):
            started = time.perf_counter()
            count, overhead = measure(args.bootstrap, args.limit), 0.0
        else:
            # The same read over an empty range, once to import everything and
            # once timed: the fixed start-up cost (pipeline construction,
            # runner, connections) that a long-running job pays once.
            measure(args.bootstrap, "latest")
            started = time.perf_counter()
            measure(args.bootstrap, "latest")
            overhead = time.perf_counter() - started
            started = time.perf_counter()
            count = measure(args.bootstrap, "earliest")
        print(json.dumps({"count": count, "seconds": time.perf_counter() - started,
                          "overhead": overhead}))
        return

    from connectors.local_kafka import LocalKafkaBroker
    with LocalKafkaBroker() as broker:
        broker.create_topic(TOPIC, partitions=3)
        produced = produce(broker.bootstrap_servers, args.sib200, args.messages)
        results = {}
        for mode in MODES:
            limit = args.end_to_end if mode == "end-to-end" else args.messages
            done = subprocess.run([sys.executable, __file__, "--measure", mode, "--bootstrap",
                                   broker.bootstrap_servers, "--limit", str(limit)],
                                  capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"{mode} failed:\n{done.stderr[-3000:]}")
            results[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    base = results["plain"]["count"] / results["plain"]["seconds"]
    print(f"{args.messages} messages of ~3 KB in 3 partitions; produced at {produced:,.0f} msg/s")
    print("steady = messages / (seconds - start-up), start-up being the same read of an "
          "empty range\n")
    print(f"{'mode':<14}{'messages':>10}{'seconds':>9}{'start-up':>9}{'msg/s':>9}{'vs plain':>9}"
          f"{'steady':>9}{'vs plain':>9}")
    for mode, r in results.items():
        rate = r["count"] / r["seconds"]
        steady = r["count"] / max(r["seconds"] - r["overhead"], 1e-9)
        print(f"{mode:<14}{r['count']:>10}{r['seconds']:>9.1f}{r['overhead']:>9.1f}"
              f"{rate:>9,.0f}{rate / base:>9.2f}{steady:>9,.0f}{steady / base:>9.2f}")


if __name__ == "__main__":
    main()
