fn main() {
    keel_runtime::cli::main()
}
