// Loads a GGUF model, generates greedily from a prompt and prints the text.
//   swift run simple [-m MODEL.gguf] [-n N_PREDICT] [PROMPT]
import CGhostCore
import Foundation

func check(_ status: gc_status, _ what: String) throws {
    guard status == GC_OK else {
        let name = String(cString: gc_status_name(Int32(status.rawValue)))
        throw NSError(domain: "ghostcore", code: Int(status.rawValue), userInfo: [
            NSLocalizedDescriptionKey: "\(what): \(name): \(String(cString: gc_last_error()))",
        ])
    }
}

var modelPath: String? = nil
var prompt = "Hello my name is"
var nPredict: UInt32 = 32
var args = CommandLine.arguments.dropFirst().makeIterator()
while let arg = args.next() {
    switch arg {
    case "-m": modelPath = args.next()
    case "-n": nPredict = UInt32(args.next() ?? "") ?? 32
    default: prompt = arg
    }
}
if modelPath == nil {
    modelPath = ["models", "../shared/models"]
        .map { "\($0)/smollm2-135m-q4_k_m.gguf" }
        .first { FileManager.default.fileExists(atPath: $0) }
}
guard let path = modelPath, gc_abi_version() == UInt32(GHOSTCORE_ABI_VERSION) else {
    FileHandle.standardError.write("no model found (-m), or ABI mismatch\n".data(using: .utf8)!)
    exit(1)
}

var model: OpaquePointer? = nil
var ctx: OpaquePointer? = nil
defer {
    gc_ctx_free(ctx)
    gc_model_free(model)
}
do {
    try check(gc_model_load(path, nil, &model), "gc_model_load")
    try check(gc_ctx_new(model, nil, &ctx), "gc_ctx_new")
    var params = gc_generate_default_params()
    params.max_tokens = nPredict
    params.temperature = 0 // greedy
    var stats = gc_generate_stats()
    stats.struct_size = UInt32(MemoryLayout<gc_generate_stats>.size)
    print(prompt, terminator: "")
    let status = gc_generate(ctx, prompt, &params, { piece, len, _, _ in
        fwrite(piece, 1, len, stdout) // raw bytes: a piece may split a UTF-8 sequence
        fflush(stdout)
        return true
    }, nil, &stats)
    print("")
    try check(status, "gc_generate")
} catch {
    FileHandle.standardError.write("error: \(error.localizedDescription)\n".data(using: .utf8)!)
    exit(1)
}
