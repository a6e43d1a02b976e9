/* realnvp_serve: runs signatures of an exported RealNVP SavedModel through the TensorFlow C API.
 *
 * TF_LoadSessionFromSavedModel with the tag "serve" is the loader TF Serving uses, so a run of this
 * program shows that an export serves with no Python at all. The signature's tensor names are read
 * from the MetaGraphDef the loader returns, with a minimal protobuf wire-format reader.
 *
 * Usage: realnvp_serve SAVED_MODEL_DIR SIGNATURE NAME=VALUE... [-- SIGNATURE NAME=VALUE...]...
 *   Loads the model once and runs each `--`-separated request in turn. VALUE is either a .npy file
 *   (C order; float32, float64, int32, int64 or uint8), fed with its own dtype and shape, or
 *   comma-separated numbers in the signature's dtype (a scalar when the signature's input is a
 *   scalar, else a vector).
 *   Prints `== SIGNATURE` per request, then one line per output, sorted by name:
 *   `NAME DTYPE DIM,DIM,... VALUE VALUE ...` (a bool as 0 or 1), or `error MESSAGE` when TensorFlow refuses the
 *   request. Exits 1 when loading or any request failed, 2 on bad usage.
 * Examples:
 *   realnvp_serve exports/realnvp/1 log_prob x=batch.npy
 *   realnvp_serve exports/realnvp/1 sample num_samples=4 temperature=0.7 seed=1,2 -- log_prob x=batch.npy
 *   realnvp_serve exports/conditional/1 log_prob x=batch.npy conditional_input=labels.npy -- classify x=batch.npy
 *   realnvp_serve exports/realnvp/1 ood_score x=images.npy
 * Build (TF is the installed tensorflow package directory):
 *   TF=$(python -c "import importlib.util as u; print(u.find_spec('tensorflow').submodule_search_locations[0])")
 *   gcc -O2 -std=c11 -o realnvp_serve export/realnvp_serve.c -I"$TF/include" -L"$TF" \
 *       -l:libtensorflow_cc.so.2 -l:libtensorflow_framework.so.2 -Wl,-rpath,"$TF"
 */
#define _POSIX_C_SOURCE 200809L

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tensorflow/c/c_api.h"

enum { kMaxRank = 8, kMaxTensors = 16, kMaxName = 256 };

typedef struct {
  char key[kMaxName];   /* the signature's input or output name, e.g. "x" */
  char name[kMaxName];  /* the graph tensor, e.g. "log_prob_x:0" */
  int dtype;            /* a TF_DataType */
  int rank;             /* -1 when unknown */
} TensorInfo;

typedef struct {
  TensorInfo inputs[kMaxTensors];
  int num_inputs;
  TensorInfo outputs[kMaxTensors];
  int num_outputs;
} Signature;

static void fail(int exit_code, const char *format, ...) {
  va_list args;
  va_start(args, format);
  fputs("realnvp_serve: ", stderr);
  vfprintf(stderr, format, args);
  fputc('\n', stderr);
  va_end(args);
  exit(exit_code);
}

/* ---- Protobuf wire format: just enough to read MetaGraphDef.signature_def. ---- */

typedef struct {
  const uint8_t *pos, *end;
} Reader;

static int read_varint(Reader *reader, uint64_t *value) {
  uint64_t result = 0;
  for (int shift = 0; shift < 64 && reader->pos < reader->end; shift += 7) {
    uint8_t byte = *reader->pos++;
    result |= (uint64_t)(byte & 0x7f) << shift;
    if (!(byte & 0x80)) {
      *value = result;
      return 1;
    }
  }
  return 0;
}

/* Reads one field. Returns its wire type (0 varint, 2 length-delimited; others are skipped) or -1
 * on malformed input; sets *number, *varint for varints and *bytes for length-delimited fields. */
static int read_field(Reader *reader, uint32_t *number, uint64_t *varint, Reader *bytes) {
  uint64_t key, length;
  if (!read_varint(reader, &key)) return -1;
  *number = (uint32_t)(key >> 3);
  switch (key & 7) {
    case 0:
      return read_varint(reader, varint) ? 0 : -1;
    case 1:
      if (reader->end - reader->pos < 8) return -1;
      reader->pos += 8;
      return 1;
    case 2:
      if (!read_varint(reader, &length) || length > (uint64_t)(reader->end - reader->pos)) return -1;
      bytes->pos = reader->pos;
      bytes->end = reader->pos + length;
      reader->pos += length;
      return 2;
    case 5:
      if (reader->end - reader->pos < 4) return -1;
      reader->pos += 4;
      return 5;
    default:
      return -1;
  }
}

static void copy_string(char *destination, Reader source) {
  size_t length = (size_t)(source.end - source.pos);
  if (length >= kMaxName) fail(1, "a signature name is longer than %d bytes", kMaxName - 1);
  memcpy(destination, source.pos, length);
  destination[length] = '\0';
}

static int reader_equals(Reader reader, const char *text) {
  size_t length = strlen(text);
  return (size_t)(reader.end - reader.pos) == length && memcmp(reader.pos, text, length) == 0;
}

/* One field of a message: its number, wire type, and value (a varint, or a length-delimited field's bytes). */
typedef struct {
  uint32_t number;
  int wire;
  uint64_t varint;
  Reader bytes;
} Field;

/* Reads the next field of `message` into `field`; returns 0 at the message's end. A malformed field is fatal,
 * `what` naming the message. */
static int next_field(Reader *message, Field *field, const char *what) {
  if (message->pos >= message->end) return 0;
  field->wire = read_field(message, &field->number, &field->varint, &field->bytes);
  if (field->wire < 0) fail(1, "malformed %s", what);
  return 1;
}

/* Whether `field` is the length-delimited field `number` (a string or a message). */
static int is_bytes(const Field *field, uint32_t number) { return field->number == number && field->wire == 2; }

/* TensorShapeProto: dim = 2 (repeated), unknown_rank = 3. Only the rank is needed. */
static void parse_shape(Reader message, TensorInfo *info) {
  Field field;
  info->rank = 0;
  while (next_field(&message, &field, "TensorShapeProto")) {
    if (field.number == 3 && field.wire == 0 && field.varint) {
      info->rank = -1;
      return;
    }
    if (is_bytes(&field, 2)) ++info->rank;
  }
}

/* TensorInfo: name = 1, dtype = 2, tensor_shape = 3. */
static void parse_tensor_info(Reader message, TensorInfo *info) {
  Field field;
  info->rank = -1;
  while (next_field(&message, &field, "TensorInfo")) {
    if (is_bytes(&field, 1)) copy_string(info->name, field.bytes);
    if (field.number == 2 && field.wire == 0) info->dtype = (int)field.varint;
    if (is_bytes(&field, 3)) parse_shape(field.bytes, info);
  }
}

/* A map<string, TensorInfo> entry: key = 1, value = 2. */
static void parse_tensor_entry(Reader entry, TensorInfo *info) {
  Field field;
  memset(info, 0, sizeof(*info));
  while (next_field(&entry, &field, "signature map")) {
    if (is_bytes(&field, 1)) copy_string(info->key, field.bytes);
    if (is_bytes(&field, 2)) parse_tensor_info(field.bytes, info);
  }
}

/* SignatureDef: inputs = 1, outputs = 2. */
static void parse_signature(Reader message, Signature *signature) {
  Field field;
  memset(signature, 0, sizeof(*signature));
  while (next_field(&message, &field, "SignatureDef")) {
    if (!is_bytes(&field, 1) && !is_bytes(&field, 2)) continue;
    int *count = field.number == 1 ? &signature->num_inputs : &signature->num_outputs;
    TensorInfo *infos = field.number == 1 ? signature->inputs : signature->outputs;
    if (*count == kMaxTensors) fail(1, "a signature has more than %d tensors", kMaxTensors);
    parse_tensor_entry(field.bytes, &infos[(*count)++]);
  }
}

/* MetaGraphDef: signature_def = 5, a map<string, SignatureDef>. Returns 1 when `name` is found. */
static int find_signature(const TF_Buffer *meta_graph_def, const char *name, Signature *signature) {
  Reader meta = {meta_graph_def->data, (const uint8_t *)meta_graph_def->data + meta_graph_def->length};
  Field entry, field;
  while (next_field(&meta, &entry, "MetaGraphDef")) {
    if (!is_bytes(&entry, 5)) continue;
    Reader key = {0}, value = {0};
    while (next_field(&entry.bytes, &field, "signature_def")) {
      if (is_bytes(&field, 1)) key = field.bytes;
      if (is_bytes(&field, 2)) value = field.bytes;
    }
    if (key.pos && reader_equals(key, name)) {
      parse_signature(value, signature);
      return 1;
    }
  }
  return 0;
}

/* ---- Input tensors: .npy files or comma-separated literals. ---- */

static size_t dtype_size(int dtype) {
  switch (dtype) {
    case TF_FLOAT: case TF_INT32: return 4;
    case TF_DOUBLE: case TF_INT64: return 8;
    case TF_UINT8: case TF_BOOL: return 1;
    default: return 0;
  }
}

static int npy_dtype(const char *descr) {
  static const struct { const char *descr; int dtype; } kTypes[] = {
      {"<f4", TF_FLOAT}, {"<f8", TF_DOUBLE}, {"<i4", TF_INT32}, {"<i8", TF_INT64}, {"|u1", TF_UINT8}};
  for (size_t i = 0; i < sizeof(kTypes) / sizeof(kTypes[0]); ++i)
    if (strcmp(descr, kTypes[i].descr) == 0) return kTypes[i].dtype;
  return -1;
}

static TF_Tensor *read_npy(const char *path) {
  FILE *file = fopen(path, "rb");
  if (!file) fail(2, "cannot open %s", path);
  unsigned char preamble[10];
  if (fread(preamble, 1, 10, file) != 10 || memcmp(preamble, "\x93NUMPY", 6) != 0)
    fail(2, "%s is not a .npy file", path);
  size_t header_length = preamble[8] | (size_t)preamble[9] << 8;
  if (preamble[6] >= 2) { /* version 2+ stores a 4-byte header length */
    unsigned char high[2];
    if (fread(high, 1, 2, file) != 2) fail(2, "%s: truncated header", path);
    header_length |= (size_t)high[0] << 16 | (size_t)high[1] << 24;
  }
  char *header = calloc(header_length + 1, 1);
  if (!header || fread(header, 1, header_length, file) != header_length) fail(2, "%s: truncated header", path);

  char descr[8] = {0};
  const char *descr_at = strstr(header, "'descr': '");
  if (!descr_at || sscanf(descr_at + 10, "%7[^']", descr) != 1 || npy_dtype(descr) < 0)
    fail(2, "%s: dtype must be <f4, <f8, <i4, <i8 or |u1", path);
  if (!strstr(header, "'fortran_order': False")) fail(2, "%s: must be in C order", path);
  const char *shape_at = strstr(header, "'shape': (");
  if (!shape_at) fail(2, "%s: no shape in header", path);
  int64_t dims[kMaxRank];
  int rank = 0;
  size_t count = 1;
  for (const char *cursor = shape_at + 10; *cursor != ')';) {
    char *after;
    long long dim = strtoll(cursor, &after, 10);
    if (after == cursor) fail(2, "%s: malformed shape", path);
    if (rank == kMaxRank) fail(2, "%s: rank above %d", path, kMaxRank);
    dims[rank++] = dim;
    count *= (size_t)dim;
    cursor = after;
    while (*cursor == ',' || *cursor == ' ') ++cursor;
  }
  free(header);

  int dtype = npy_dtype(descr);
  size_t num_bytes = count * dtype_size(dtype);
  TF_Tensor *tensor = TF_AllocateTensor(dtype, dims, rank, num_bytes);
  if (fread(TF_TensorData(tensor), 1, num_bytes, file) != num_bytes) fail(2, "%s: truncated data", path);
  fclose(file);
  return tensor;
}

static TF_Tensor *parse_literal(const char *text, const TensorInfo *input) {
  size_t count = 1;
  for (const char *c = text; *c; ++c) count += *c == ',';
  if (input->rank == 0 && count != 1) fail(2, "input %s is a scalar; got %s", input->key, text);
  size_t size = dtype_size(input->dtype);
  if (!size) fail(2, "input %s: literals of dtype %d are not supported", input->key, input->dtype);
  int64_t dims[1] = {(int64_t)count};
  TF_Tensor *tensor = TF_AllocateTensor(input->dtype, dims, input->rank == 0 ? 0 : 1, count * size);
  char *data = TF_TensorData(tensor);
  const char *cursor = text;
  for (size_t i = 0; i < count; ++i) {
    char *after;
    double number = strtod(cursor, &after);
    if (after == cursor || (*after != ',' && *after != '\0')) fail(2, "input %s: bad number in %s", input->key, text);
    switch (input->dtype) {
      case TF_FLOAT: ((float *)data)[i] = (float)number; break;
      case TF_DOUBLE: ((double *)data)[i] = number; break;
      case TF_INT32: ((int32_t *)data)[i] = (int32_t)number; break;
      case TF_INT64: ((int64_t *)data)[i] = (int64_t)number; break;
      case TF_UINT8: ((uint8_t *)data)[i] = (uint8_t)number; break;
      case TF_BOOL: ((unsigned char *)data)[i] = number != 0.0; break;
    }
    cursor = after + (*after == ',');
  }
  return tensor;
}

/* ---- Running and printing. ---- */

static TF_Output graph_output(TF_Graph *graph, const char *tensor_name) {
  char operation[kMaxName];
  const char *colon = strrchr(tensor_name, ':');
  size_t length = colon ? (size_t)(colon - tensor_name) : strlen(tensor_name);
  memcpy(operation, tensor_name, length);
  operation[length] = '\0';
  TF_Output output = {TF_GraphOperationByName(graph, operation), colon ? atoi(colon + 1) : 0};
  if (!output.oper) fail(1, "the graph has no operation %s", operation);
  return output;
}

static void print_tensor(const char *key, const TF_Tensor *tensor) {
  int dtype = TF_TensorType(tensor);
  static const char *kNames[] = {[TF_FLOAT] = "float32", [TF_DOUBLE] = "float64", [TF_INT32] = "int32",
                                 [TF_UINT8] = "uint8", [TF_INT64] = "int64", [TF_BOOL] = "bool"};
  if (!dtype_size(dtype)) fail(1, "output %s has unsupported dtype %d", key, dtype);
  printf("%s %s ", key, kNames[dtype]);
  int64_t count = 1;
  for (int i = 0; i < TF_NumDims(tensor); ++i) {
    printf(i ? ",%lld" : "%lld", (long long)TF_Dim(tensor, i));
    count *= TF_Dim(tensor, i);
  }
  const void *data = TF_TensorData(tensor);
  for (int64_t i = 0; i < count; ++i) {
    switch (dtype) {
      case TF_FLOAT: printf(" %.9g", ((const float *)data)[i]); break;
      case TF_DOUBLE: printf(" %.17g", ((const double *)data)[i]); break;
      case TF_INT32: printf(" %d", ((const int32_t *)data)[i]); break;
      case TF_INT64: printf(" %lld", (long long)((const int64_t *)data)[i]); break;
      case TF_UINT8: printf(" %u", ((const uint8_t *)data)[i]); break;
      case TF_BOOL: printf(" %d", ((const unsigned char *)data)[i] ? 1 : 0); break;
    }
  }
  putchar('\n');
}

static int compare_keys(const void *a, const void *b) {
  return strcmp(((const TensorInfo *)a)->key, ((const TensorInfo *)b)->key);
}

/* Runs one request, `SIGNATURE NAME=VALUE...`, and prints `== SIGNATURE` and then its outputs, or
 * `error MESSAGE`. Returns 1 when TensorFlow refused the request; bad usage exits with status 2. */
static int run_request(TF_Session *session, TF_Graph *graph, const TF_Buffer *meta_graph_def, char **request,
                       int request_length, TF_Status *status) {
  const char *signature_name = request[0];
  Signature signature;
  if (!find_signature(meta_graph_def, signature_name, &signature)) fail(2, "no signature %s", signature_name);
  int num_feeds = request_length - 1;
  if (num_feeds != signature.num_inputs) {
    /* Name them: a conditional flow's signatures take `conditional_input` besides the data. */
    char names[kMaxTensors * (kMaxName + 2)] = "";
    for (int i = 0; i < signature.num_inputs; ++i) {
      if (i) strcat(names, ", ");
      strcat(names, signature.inputs[i].key);
    }
    fail(2, "signature %s takes %d inputs (%s); got %d", signature_name, signature.num_inputs, names, num_feeds);
  }
  TF_Output feeds[kMaxTensors];
  TF_Tensor *feed_values[kMaxTensors];
  for (int i = 0; i < num_feeds; ++i) {
    const char *argument = request[1 + i], *equals = strchr(argument, '=');
    if (!equals) fail(2, "arguments are NAME=VALUE; got %s", argument);
    const TensorInfo *input = NULL;
    for (int j = 0; j < signature.num_inputs; ++j)
      if (strlen(signature.inputs[j].key) == (size_t)(equals - argument) &&
          strncmp(signature.inputs[j].key, argument, (size_t)(equals - argument)) == 0)
        input = &signature.inputs[j];
    if (!input) fail(2, "signature %s has no input named in %s", signature_name, argument);
    const char *value = equals + 1;
    size_t length = strlen(value);
    int is_npy = length > 4 && strcmp(value + length - 4, ".npy") == 0;
    feeds[i] = graph_output(graph, input->name);
    feed_values[i] = is_npy ? read_npy(value) : parse_literal(value, input);
  }

  qsort(signature.outputs, (size_t)signature.num_outputs, sizeof(TensorInfo), compare_keys);
  TF_Output fetches[kMaxTensors];
  TF_Tensor *results[kMaxTensors] = {0};
  for (int i = 0; i < signature.num_outputs; ++i) fetches[i] = graph_output(graph, signature.outputs[i].name);

  TF_SessionRun(session, NULL, feeds, feed_values, num_feeds, fetches, results, signature.num_outputs, NULL, 0,
                NULL, status);
  for (int i = 0; i < num_feeds; ++i) TF_DeleteTensor(feed_values[i]);
  printf("== %s\n", signature_name);
  if (TF_GetCode(status) != TF_OK) {
    printf("error ");
    for (const char *c = TF_Message(status); *c; ++c) putchar(*c == '\n' || *c == '\t' ? ' ' : *c);
    putchar('\n');
    return 1;
  }
  for (int i = 0; i < signature.num_outputs; ++i) {
    print_tensor(signature.outputs[i].key, results[i]);
    TF_DeleteTensor(results[i]);
  }
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 3) fail(2, "usage: realnvp_serve SAVED_MODEL_DIR SIGNATURE NAME=VALUE... [-- SIGNATURE NAME=VALUE...]...");
  const char *export_dir = argv[1];

  TF_Status *status = TF_NewStatus();
  TF_Graph *graph = TF_NewGraph();
  TF_SessionOptions *options = TF_NewSessionOptions();
  TF_Buffer *meta_graph_def = TF_NewBuffer();
  const char *tags[] = {"serve"};
  TF_Session *session =
      TF_LoadSessionFromSavedModel(options, NULL, export_dir, tags, 1, graph, meta_graph_def, status);
  if (TF_GetCode(status) != TF_OK) fail(1, "loading %s: %s", export_dir, TF_Message(status));

  /* One load, then every `--`-separated request in turn, as a server would. */
  int num_failed = 0;
  for (int start = 2; start < argc;) {
    int end = start;
    while (end < argc && strcmp(argv[end], "--") != 0) ++end;
    if (end == start) fail(2, "an empty request between `--`s");
    num_failed += run_request(session, graph, meta_graph_def, argv + start, end - start, status);
    start = end + 1;
  }

  TF_CloseSession(session, status);
  TF_DeleteSession(session, status);
  TF_DeleteBuffer(meta_graph_def);
  TF_DeleteSessionOptions(options);
  TF_DeleteGraph(graph);
  TF_DeleteStatus(status);
  return num_failed ? 1 : 0;
}
