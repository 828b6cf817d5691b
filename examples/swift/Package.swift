// swift-tools-version:5.7
// The Swift counterpart of examples/c/simple.c. Needs libghostcore installed where
// pkg-config finds it (scripts/install-lib.sh PREFIX; PKG_CONFIG_PATH=PREFIX/lib/pkgconfig).
import PackageDescription

let package = Package(
    name: "GhostCoreSimple",
    targets: [
        .systemLibrary(name: "CGhostCore", path: "Sources/CGhostCore", pkgConfig: "ghostcore"),
        .executableTarget(name: "simple", dependencies: ["CGhostCore"]),
    ]
)
