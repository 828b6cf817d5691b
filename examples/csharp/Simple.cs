// The C# counterpart of examples/c/simple.c, through P/Invoke. Loads a GGUF model,
// generates greedily from a prompt and prints the text.
//
//   mcs -out:simple.exe Simple.cs
//   LD_LIBRARY_PATH=<folder of libghostcore.so> mono simple.exe [-m MODEL.gguf] [-n N] [PROMPT]
//
// Struct layouts mirror ghostcore.h (bools are 1-byte `byte` fields so the structs stay
// blittable); each is checked against the struct_size the library reports.
using System;
using System.IO;
using System.Runtime.InteropServices;
using System.Text;

static class Native
{
    const string Lib = "ghostcore";
    public const uint AbiVersion = 1;
    public const int GC_OK = 0;

    [StructLayout(LayoutKind.Sequential)]
    public struct ModelInfo
    {
        public uint struct_size;
        public IntPtr architecture;
        public IntPtr name;
        public ulong n_params;
        public uint n_ctx_train;
        public uint n_vocab;
        public uint n_layer;
        public uint n_embd;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct GenerateParams
    {
        public uint struct_size;
        public uint max_tokens;
        public float temperature;
        public uint top_k;
        public float top_p;
        public float min_p;
        public float repeat_penalty;
        public uint repeat_last_n;
        public ulong seed;
        public byte add_special;
        public byte parse_special;
        public byte stop_at_eog;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct GenerateStats
    {
        public uint struct_size;
        public uint n_prompt_tokens;
        public uint n_generated_tokens;
        public uint stop_reason;
        public double prompt_seconds;
        public double prompt_tokens_per_second;
        public double generate_seconds;
        public double generate_tokens_per_second;
        public float sparsity;
    }

    [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
    [return: MarshalAs(UnmanagedType.I1)]
    public delegate bool TokenCallback(IntPtr piece, UIntPtr len, int token, IntPtr userData);

    [DllImport(Lib)] public static extern uint gc_abi_version();
    [DllImport(Lib)] public static extern IntPtr gc_last_error();
    [DllImport(Lib)] public static extern IntPtr gc_status_name(int status);
    [DllImport(Lib)] public static extern int gc_model_load(
        [MarshalAs(UnmanagedType.LPUTF8Str)] string path, IntPtr parameters, out IntPtr model);
    [DllImport(Lib)] public static extern void gc_model_free(IntPtr model);
    [DllImport(Lib)] public static extern int gc_model_get_info(IntPtr model, ref ModelInfo info);
    [DllImport(Lib)] public static extern int gc_ctx_new(IntPtr model, IntPtr parameters, out IntPtr ctx);
    [DllImport(Lib)] public static extern void gc_ctx_free(IntPtr ctx);
    [DllImport(Lib)] public static extern GenerateParams gc_generate_default_params();
    [DllImport(Lib)] public static extern int gc_generate(IntPtr ctx,
        [MarshalAs(UnmanagedType.LPUTF8Str)] string prompt, ref GenerateParams parameters,
        TokenCallback onToken, IntPtr userData, ref GenerateStats stats);

    public static string Utf8(IntPtr p)
    {
        if (p == IntPtr.Zero) return "";
        int n = 0;
        while (Marshal.ReadByte(p, n) != 0) n++;
        var bytes = new byte[n];
        Marshal.Copy(p, bytes, 0, n);
        return Encoding.UTF8.GetString(bytes);
    }

    public static void Check(int status, string what)
    {
        if (status != GC_OK)
            throw new Exception(what + ": " + Utf8(gc_status_name(status)) + ": " + Utf8(gc_last_error()));
    }
}

static class Simple
{
    static string FindModel()
    {
        foreach (var dir in new[] { "models", "../shared/models" })
        {
            var path = Path.Combine(dir, "smollm2-135m-q4_k_m.gguf");
            if (File.Exists(path)) return path;
        }
        return null;
    }

    static int Main(string[] args)
    {
        string modelPath = null, prompt = "Hello my name is";
        int nPredict = 32;
        for (int i = 0; i < args.Length; i++)
        {
            if (args[i] == "-m" && i + 1 < args.Length) modelPath = args[++i];
            else if (args[i] == "-n" && i + 1 < args.Length) nPredict = int.Parse(args[++i]);
            else prompt = args[i];
        }
        modelPath = modelPath ?? FindModel();
        if (modelPath == null || nPredict <= 0)
        {
            Console.Error.WriteLine("usage: simple.exe [-m MODEL.gguf] [-n N_PREDICT>0] [PROMPT]");
            return 1;
        }
        IntPtr model = IntPtr.Zero, ctx = IntPtr.Zero;
        try
        {
            if (Native.gc_abi_version() != Native.AbiVersion)
                throw new Exception("libghostcore ABI does not match these bindings");
            var gp = Native.gc_generate_default_params();
            if (gp.struct_size != Marshal.SizeOf(typeof(Native.GenerateParams)))
                throw new Exception("GenerateParams layout does not match the library");

            Native.Check(Native.gc_model_load(modelPath, IntPtr.Zero, out model), "gc_model_load");
            var info = new Native.ModelInfo { struct_size = (uint)Marshal.SizeOf(typeof(Native.ModelInfo)) };
            Native.Check(Native.gc_model_get_info(model, ref info), "gc_model_get_info");
            Console.Error.WriteLine("model: {0} ({1}), {2} parameters", Native.Utf8(info.name),
                Native.Utf8(info.architecture), info.n_params);
            Native.Check(Native.gc_ctx_new(model, IntPtr.Zero, out ctx), "gc_ctx_new");

            gp.max_tokens = (uint)nPredict;
            gp.temperature = 0f; // greedy
            var stats = new Native.GenerateStats { struct_size = (uint)Marshal.SizeOf(typeof(Native.GenerateStats)) };
            var stdout = Console.OpenStandardOutput();
            var promptBytes = Encoding.UTF8.GetBytes(prompt);
            stdout.Write(promptBytes, 0, promptBytes.Length);
            Native.TokenCallback onToken = (piece, len, token, user) =>
            {
                var bytes = new byte[(int)len];
                Marshal.Copy(piece, bytes, 0, bytes.Length);
                stdout.Write(bytes, 0, bytes.Length); // raw bytes: pieces may split UTF-8
                stdout.Flush();
                return true;
            };
            int st = Native.gc_generate(ctx, prompt, ref gp, onToken, IntPtr.Zero, ref stats);
            GC.KeepAlive(onToken);
            stdout.WriteByte((byte)'\n');
            stdout.Flush();
            Native.Check(st, "gc_generate");
            Console.Error.WriteLine("generated {0} tokens, {1:F1} tok/s", stats.n_generated_tokens,
                stats.generate_tokens_per_second);
            return 0;
        }
        catch (Exception e)
        {
            Console.Error.WriteLine("error: " + e.Message);
            return 1;
        }
        finally
        {
            Native.gc_ctx_free(ctx);
            Native.gc_model_free(model);
        }
    }
}
