package io.duroot.stream.example;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.SecureRandom;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.UUID;

import org.apache.avro.Schema;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.message.BinaryMessageDecoder;
import org.apache.avro.message.BinaryMessageEncoder;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.apache.kafka.common.utils.Utils;

/**
 * One du-root workflow driven from Java, using nothing but docs/contract.md and the
 * .avsc files: Init, Append, Commit with request-reply, then the workflow's events
 * and its index entry, read back with read_committed.
 *
 * <p>Usage: DuRootWorkflow BOOTSTRAP TOPIC_PREFIX SCHEMAS_DIR HOST HOST_ROOT PATH=USAGE...
 *
 * <p>Prints one line per step ("reply Init ok vid=...", "event 0 STARTED ...", "index COMPLETED
 * 0") and exits 0 when the workflow completed as asked; 1 otherwise.
 */
public final class DuRootWorkflow {
  private static final String NO_VC = "00000000000000000000000001";
  private static final String CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
  private static final SecureRandom RANDOM = new SecureRandom();
  private static final Duration TIMEOUT = Duration.ofSeconds(60);

  private final String prefix;
  private final Schema command;
  private final BinaryMessageEncoder<GenericRecord> commands;
  private final BinaryMessageDecoder<GenericRecord> replies;
  private final BinaryMessageDecoder<GenericRecord> events;
  private final BinaryMessageDecoder<GenericRecord> index;
  private final KafkaProducer<String, byte[]> producer;
  private final KafkaConsumer<String, byte[]> replyConsumer;
  private final Properties consumerProps;
  private final TopicPartition replyPartition;

  DuRootWorkflow(String bootstrap, String prefix, Path schemas) throws IOException {
    this.prefix = prefix;
    command = parse(schemas.resolve("Command.avsc"));
    commands = new BinaryMessageEncoder<>(GenericData.get(), command);
    replies = new BinaryMessageDecoder<>(GenericData.get(), parse(schemas.resolve("Reply.avsc")));
    events =
        new BinaryMessageDecoder<>(GenericData.get(), parse(schemas.resolve("WorkflowEvent.avsc")));
    index =
        new BinaryMessageDecoder<>(
            GenericData.get(), parse(schemas.resolve("WorkflowIndexEvent.avsc")));

    Properties p = new Properties();
    p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
    p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
    p.put(ProducerConfig.ACKS_CONFIG, "all");
    // No partitioner setting: Java's default hashes a key with murmur2, as the contract says.
    producer = new KafkaProducer<>(p);

    consumerProps = new Properties();
    consumerProps.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    consumerProps.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
    consumerProps.put(
        ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
    consumerProps.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
    consumerProps.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
    replyConsumer = new KafkaConsumer<>(consumerProps);
    String repliesTopic = prefix + "replies";
    int count = replyConsumer.partitionsFor(repliesTopic, TIMEOUT).size();
    replyPartition = new TopicPartition(repliesTopic, RANDOM.nextInt(count));
    replyConsumer.assign(List.of(replyPartition));
    replyConsumer.seekToEnd(List.of(replyPartition));
    replyConsumer.position(replyPartition); // resolve "end" now, before anything is sent
  }

  private static Schema parse(Path file) throws IOException {
    return new Schema.Parser().parse(Files.readString(file));
  }

  /** A ULID: 48 bits of ms time, 80 random bits, 26 Crockford base32 characters. */
  static String newUlid() {
    byte[] random = new byte[10];
    RANDOM.nextBytes(random);
    java.math.BigInteger value =
        java.math.BigInteger.valueOf(System.currentTimeMillis())
            .shiftLeft(80)
            .or(new java.math.BigInteger(1, random));
    StringBuilder text = new StringBuilder();
    for (int shift = 125; shift >= 0; shift -= 5) {
      text.append(CROCKFORD.charAt(value.shiftRight(shift).intValue() & 31));
    }
    return text.toString();
  }

  private GenericRecord body(String name) {
    for (Schema branch : command.getField("command").schema().getTypes()) {
      if (branch.getName().equals(name)) {
        return new GenericData.Record(branch);
      }
    }
    throw new IllegalArgumentException("no command body " + name);
  }

  /** Send one command and wait for its reply; returns the new vid. */
  String send(String workflowId, String expectedVid, GenericRecord body) throws IOException {
    GenericRecord c = new GenericData.Record(command);
    String commandId = newUlid();
    c.put("command_id", commandId);
    c.put("workflow_id", workflowId);
    c.put("expected_vid", expectedVid);
    c.put("issued_at", System.currentTimeMillis());
    c.put("command", body);
    ByteBuffer encoded = commands.encode(c);
    byte[] value = new byte[encoded.remaining()];
    encoded.get(value);

    ProducerRecord<String, byte[]> record =
        new ProducerRecord<>(prefix + "commands", workflowId, value);
    record.headers().add("reply-topic", replyPartition.topic().getBytes(StandardCharsets.UTF_8));
    record
        .headers()
        .add("reply-partition", Integer.toString(replyPartition.partition()).getBytes(StandardCharsets.UTF_8));
    record.headers().add("correlation-id", commandId.getBytes(StandardCharsets.UTF_8));
    producer.send(record);
    producer.flush();

    long deadline = System.nanoTime() + TIMEOUT.toNanos();
    while (System.nanoTime() < deadline) {
      for (ConsumerRecord<String, byte[]> r : replyConsumer.poll(Duration.ofMillis(200))) {
        Header correlation = r.headers().lastHeader("correlation-id");
        if (correlation == null
            || !commandId.equals(new String(correlation.value(), StandardCharsets.UTF_8))) {
          continue; // another requester's reply in the same partition
        }
        GenericRecord reply = replies.decode(r.value());
        boolean ok = (Boolean) reply.get("ok");
        System.out.printf(
            "reply %s %s vid=%s error=%s message=%s%n",
            body.getSchema().getName(),
            ok ? "ok" : "rejected",
            reply.get("vid"),
            reply.get("error"),
            reply.get("message"));
        if (!ok) {
          throw new IllegalStateException("command rejected: " + reply.get("message"));
        }
        return reply.get("vid").toString();
      }
    }
    throw new IllegalStateException("no reply within " + TIMEOUT);
  }

  /** The records of `topic` whose key passes `keep`, from its start to its end now. */
  private List<ConsumerRecord<String, byte[]>> read(String topic, String key, boolean prefixMatch) {
    List<ConsumerRecord<String, byte[]>> found = new ArrayList<>();
    try (KafkaConsumer<String, byte[]> consumer = new KafkaConsumer<>(consumerProps)) {
      int count = consumer.partitionsFor(topic, TIMEOUT).size();
      // The workflow's partition, as Java's default partitioner computes it.
      String workflowId = prefixMatch ? key.substring(0, key.length() - 1) : key;
      int partition =
          Utils.toPositive(Utils.murmur2(workflowId.getBytes(StandardCharsets.UTF_8))) % count;
      TopicPartition tp = new TopicPartition(topic, partition);
      consumer.assign(List.of(tp));
      consumer.seekToBeginning(List.of(tp));
      Map<TopicPartition, Long> end = consumer.endOffsets(List.of(tp), TIMEOUT);
      long deadline = System.nanoTime() + TIMEOUT.toNanos();
      while (consumer.position(tp) < end.get(tp) && System.nanoTime() < deadline) {
        for (ConsumerRecord<String, byte[]> r : consumer.poll(Duration.ofMillis(200))) {
          boolean match = prefixMatch ? r.key().startsWith(key) : r.key().equals(key);
          if (match && r.value() != null) {
            found.add(r);
          }
        }
      }
    }
    return found;
  }

  public static void main(String[] args) throws Exception {
    if (args.length < 6) {
      System.err.println(
          "usage: DuRootWorkflow BOOTSTRAP TOPIC_PREFIX SCHEMAS_DIR HOST HOST_ROOT PATH=USAGE...");
      System.exit(2);
    }
    DuRootWorkflow client = new DuRootWorkflow(args[0], args[1], Path.of(args[2]));
    String workflowId = UUID.randomUUID().toString();
    System.out.println("workflow " + workflowId);

    GenericRecord init = client.body("Init");
    init.put("registry_id", UUID.randomUUID().toString());
    init.put("global_root", "/java" + args[4]);
    init.put("host", args[3]);
    init.put("host_root", args[4]);
    String vid = client.send(workflowId, NO_VC, init);

    GenericRecord append = client.body("Append");
    Schema pathUsage = append.getSchema().getField("paths").schema().getElementType();
    List<GenericRecord> paths = new ArrayList<>();
    for (int i = 5; i < args.length; i++) {
      String[] parts = args[i].split("=", 2);
      GenericRecord p = new GenericData.Record(pathUsage);
      p.put("path", parts[0]);
      p.put("usage", Long.parseLong(parts[1]));
      paths.add(p);
    }
    append.put("paths", paths);
    vid = client.send(workflowId, vid, append);
    vid = client.send(workflowId, vid, client.body("Commit"));

    String last = "";
    for (ConsumerRecord<String, byte[]> r : client.read(args[1] + "events", workflowId + "/", true)) {
      GenericRecord e = client.events.decode(r.value());
      GenericRecord payload = (GenericRecord) e.get("payload");
      last = payload.getSchema().getName();
      System.out.printf(
          "event %s %s vid=%s parent=%s %s%n",
          e.get("seq"), r.headers().lastHeader("event-type") == null ? "?" :
              new String(r.headers().lastHeader("event-type").value(), StandardCharsets.UTF_8),
          e.get("event_id"), e.get("parent"), payload);
    }
    String indexed = "";
    for (ConsumerRecord<String, byte[]> r : client.read(args[1] + "index", workflowId, false)) {
      GenericRecord entry = client.index.decode(r.value());
      GenericRecord payload = (GenericRecord) entry.get("payload");
      indexed = payload.getSchema().getName();
      System.out.printf("index %s %s%n", indexed, payload);
    }
    client.producer.close();
    client.replyConsumer.close();
    boolean done = last.equals("DuRootCommitted") && indexed.equals("DuRootCompleted");
    System.out.println(done ? "done" : "incomplete: last event " + last + ", index " + indexed);
    System.exit(done ? 0 : 1);
  }
}
