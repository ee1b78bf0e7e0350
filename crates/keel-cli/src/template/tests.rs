//! Tests against Go's behaviour and docker's documented examples.

use super::*;
use serde_json::json;

fn render(t: &str, v: &Value) -> String {
    match Template::parse(t) {
        Ok(tmpl) => tmpl.render(v).unwrap_or_else(|e| panic!("{t}: {e}")),
        Err(e) => panic!("{t}: {e}"),
    }
}

fn error(t: &str, v: &Value) -> String {
    match Template::parse(t) {
        Ok(tmpl) => tmpl
            .render(v)
            .map_or_else(|e| e.to_string(), |s| panic!("{t}: {s}")),
        Err(e) => e.to_string(),
    }
}

fn check(v: &Value, cases: &[(&str, &str)]) {
    for (t, want) in cases {
        assert_eq!(render(t, v), *want, "template {t}");
    }
}

#[test]
fn keel_basics() {
    let value = json!({"Names": "web", "State": {"Status": "running", "Pid": 42},
                       "Labels": {"a": "b"}, "Args": ["sh", "-c"], "None": null});
    check(
        &value,
        &[
            ("{{.Names}}", "web"),
            ("{{.State.Status}}/{{.State.Pid}}", "running/42"),
            ("{{json .Labels}}", r#"{"a":"b"}"#),
            ("{{index .Labels \"a\"}}", "b"),
            ("{{upper .Names}}\\t{{.Args}}", "WEB\t[sh -c]"),
            ("{{.Missing}} {{.Missing.Deeper}}", "<no value> <no value>"),
            ("{{.None}}", "<nil>"),
            ("id: {{ .Names }}!", "id: web!"),
            ("{{$.State.Pid}}", "42"),
            (
                "{{.}}",
                "map[Args:[sh -c] Labels:map[a:b] Names:web None:<nil> State:map[Pid:42 Status:running]]",
            ),
        ],
    );
    assert!(Template::parse("{{.Names").is_err());
    let table = Template::parse("table {{.Names}}\t{{.Status}}").unwrap();
    assert!(table.table && table.has_tabs());
    assert_eq!(table.header(&|name| name.to_uppercase()), "NAMES\tSTATUS");
    assert!(Template::parse("table").unwrap().table);
    assert!(!Template::parse("tablex {{.Names}}").unwrap().table);
    assert!(!Template::parse("{{.Names}}").unwrap().has_tabs());
    let escaped = Template::parse("table  {{.Names}}\\t{{.Status}} ").unwrap();
    assert!(escaped.has_tabs());
    assert_eq!(escaped.header(&|name| name.to_uppercase()), "NAMES\tSTATUS");
}

#[test]
fn docker_documented_examples() {
    let v = json!({
        "Name": "/web", "Image": "nginx:latest", "Port": 80, "Args": ["-g", "daemon off;"],
        "Mounts": [{"Type": "volume", "Source": "/var/lib/x"}],
        "State": {"Status": "running", "Pid": 7},
        "Config": {"Labels": {"com.example": "1", "app": "web"}},
        "NetworkSettings": {
            "Networks": {"bridge": {"IPAddress": "172.17.0.2"}, "host": {"IPAddress": ""}},
            "Ports": {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}],
                      "443/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8443"}]}
        }
    });
    let ports = "{{range $p, $conf := .NetworkSettings.Ports}} {{$p}} -> {{(index $conf 0).HostPort}} {{end}}";
    check(
        &v,
        &[
            (r#"{{join .Args " , "}}"#, "-g , daemon off;"),
            (
                "{{json .Mounts}}",
                r#"[{"Source":"/var/lib/x","Type":"volume"}]"#,
            ),
            (
                "{{lower .Name}} {{upper .Name}} {{title .Name}}",
                "/web /WEB /Web",
            ),
            (r#"{{split .Image ":"}}"#, "[nginx latest]"),
            (
                "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                "172.17.0.2",
            ),
            (ports, " 443/tcp -> 8443  80/tcp -> 8080 "),
            (
                r#"{{if eq .State.Status "running"}}up{{else}}down{{end}}"#,
                "up",
            ),
            ("{{len .Mounts}}", "1"),
            (r#"{{printf "%s:%d" .Name .Port}}"#, "/web:80"),
            ("{{.Config.Labels}}", "map[app:web com.example:1]"),
            (r#"{{index .Config.Labels "com.example"}}"#, "1"),
            ("{{with .State}}{{.Pid}}{{end}}", "7"),
            (
                "{{.Name | upper}} {{.Name | printf \"%q\"}} {{json .Name}}",
                r#"/WEB "/web" "/web""#,
            ),
            ("{{- .Name }}", "/web"),
        ],
    );
}

#[test]
fn whitespace_comments_and_literals() {
    check(
        &json!({"A": [1, 2], "X": "x"}),
        &[
            ("{{range .A}}{{.}} {{end}}", "1 2 "),
            ("a  {{- .X -}}  b", "axb"),
            ("a \n {{- .X}} \n", "ax \n"),
            ("{{range .A -}}\n  {{.}}\n{{- end}}", "12"),
            ("a{{/* comment */}}b", "ab"),
            ("a {{- /* comment */ -}} b", "ab"),
            ("{{-3}} {{ .X}}{{.X }}{{ .X | printf \"%s\" }}", "-3 xxx"),
            ("{{`raw\\n`}}", "raw\n"),
            ("{{\"a\\tb\\u00e9\\x41\\101\"}}", "a\tbéAA"),
            (
                "{{'a'}} {{'\\x41'}} {{0x1F}} {{0o17}} {{017}} {{1_000}} {{1e3}} {{.5}}",
                "97 65 31 15 15 1000 1000 0.5",
            ),
            ("line1\\nline2 {{print \"a\\nb\"}}", "line1\nline2 a\nb"),
        ],
    );
}

#[test]
fn control_structures() {
    let v = json!({"A": [1, 2, 3], "E": [], "M": {"b": 2, "a": 1}, "S": "s", "Z": 0, "T": true});
    check(
        &v,
        &[
            ("{{if .Z}}z{{else if .S}}s{{else}}n{{end}}", "s"),
            ("{{if .Missing}}y{{else}}n{{end}}", "n"),
            (
                "{{if and .T .S}}y{{end}}{{if or .Z .E}}y{{else}}n{{end}}",
                "yn",
            ),
            ("{{range .E}}x{{else}}empty{{end}}", "empty"),
            (
                "{{range $i, $v := .A}}{{$i}}={{$v}},{{end}}",
                "0=1,1=2,2=3,",
            ),
            ("{{range $v := .A}}{{$v}}{{end}}", "123"),
            ("{{range $k, $v := .M}}{{$k}}{{$v}}{{end}}", "a1b2"),
            (
                "{{range .A}}{{if eq . 2}}{{continue}}{{end}}{{.}}{{end}}",
                "13",
            ),
            ("{{range .A}}{{if eq . 2}}{{break}}{{end}}{{.}}{{end}}", "1"),
            ("{{range 3}}{{.}}{{end}}", "012"),
            ("{{with .Missing}}x{{else with .S}}{{.}}{{end}}", "s"),
            ("{{with .Z}}x{{else}}zero{{end}}", "zero"),
            ("{{$x := 1}}{{range .A}}{{$x = .}}{{end}}{{$x}}", "3"),
            ("{{with $x := .S}}{{$x}}{{.}}{{end}}", "ss"),
            ("{{range .A}}{{$.S}}{{end}}", "sss"),
            (
                r#"{{define "row"}}<{{.}}>{{end}}{{range .A}}{{template "row" .}}{{end}}"#,
                "<1><2><3>",
            ),
            (r#"{{block "b" .S}}[{{.}}]{{end}}"#, "[s]"),
            (
                r#"{{define "b"}}{{end}}{{block "b" .S}}[{{.}}]{{end}}"#,
                "[s]",
            ),
            (
                r#"{{template "t"}}{{define "t"}}{{.}}{{end}}"#,
                "<no value>",
            ),
        ],
    );
}

#[test]
fn printing_values() {
    let v = json!({"F": 1.5, "Big": 1000000.0, "Int": 1000000, "Neg": -2, "Small": 0.00001,
                   "Whole": 2.0, "U": 18446744073709551615u64, "Nested": [[1, "a"], {"k": null}]});
    check(
        &v,
        &[
            (
                "{{.F}} {{.Big}} {{.Int}} {{.Neg}} {{.Small}} {{.Whole}}",
                "1.5 1e+06 1000000 -2 1e-05 2",
            ),
            (
                "{{.U}} {{.Nested}}",
                "18446744073709551615 [[1 a] map[k:<nil>]]",
            ),
            ("{{1.25}} {{true}} {{print nil}}", "1.25 true <nil>"),
            (
                "{{json .F}} {{json .Whole}} {{json .Small}} {{json .Nested}}",
                r#"1.5 2 0.00001 [[1,"a"],{"k":null}]"#,
            ),
            (
                "{{json 1e-7}} {{json 1e21}} {{json \"<&>\"}}",
                r#"1e-7 1e+21 "<&>""#,
            ),
        ],
    );
}

#[test]
fn functions() {
    let v = json!({"A": [1, 2, 3], "S": "héllo world", "M": {"k": [10, 20]}, "N": 3, "F": 2.5});
    check(
        &v,
        &[
            (
                "{{and 1 0 .Missing}} {{and 1 2}} {{or 0 \"\" .S}} {{or 0 false}}",
                "0 2 héllo world false",
            ),
            ("{{and .Missing (index .A 99)}}", "<no value>"),
            ("{{not .N}} {{not 0}}", "false true"),
            ("{{len .A}} {{len .S}} {{len .M}}", "3 12 1"),
            (
                "{{index .M \"k\" 1}} {{index .A 0}} {{index .M \"nope\"}} {{index .S 0}}",
                "20 1 <no value> 104",
            ),
            (
                "{{slice .A 1}} {{slice .A 1 2}} {{slice \"abcd\" 1 3}} {{slice .A}}",
                "[2 3] [2] bc [1 2 3]",
            ),
            (
                "{{print 1 2 \"a\" 3 \"b\" \"c\"}}|{{println 1 \"a\"}}|",
                "1 2a3bc|1 a\n|",
            ),
            (
                "{{eq .N 1 2 3}} {{eq .S \"x\"}} {{ne 1 2}} {{eq .F 2.5}} {{eq 3 3.0}}",
                "true false true true true",
            ),
            ("{{eq nil .Missing}} {{eq .Missing 1}}", "true false"),
            (
                "{{lt 1 2}} {{le 2 2}} {{gt \"b\" \"a\"}} {{ge 1 2}} {{lt 1.5 2}}",
                "true true true false true",
            ),
            (
                "{{html \"<a href='x'>&\\\"\"}}",
                "&lt;a href=&#39;x&#39;&gt;&amp;&#34;",
            ),
            (
                "{{js \"it's <b>\\\"=\\\"\"}}",
                "it\\'s \\u003Cb\\u003E\\\"\\u003D\\\"",
            ),
            ("{{urlquery \"a b&c=d/é\"}}", "a+b%26c%3Dd%2F%C3%A9"),
            (
                "{{split \"a,b,,c\" \",\"}} {{len (split \"\" \",\")}} {{split \"ab\" \"\"}}",
                "[a b  c] 1 [a b]",
            ),
            (
                "{{join .A \"-\"}} {{title .S}} {{upper .S}} {{lower \"ABC\"}}",
                "1-2-3 Héllo World HÉLLO WORLD abc",
            ),
            (
                "[{{pad \"x\" 2 3}}] [{{pad \"\" 2 3}}] {{truncate .S 3}} {{truncate \"ab\" 5}}",
                "[  x   ] [] hél ab",
            ),
            ("{{truncate .S 2 | len}} {{.A | len}}", "3 3"),
        ],
    );
}

#[test]
fn printf_verbs() {
    let v = json!({"S": "go", "I": 42, "F": 1.23456, "B": true, "A": ["x", "y"], "N": null});
    check(
        &v,
        &[
            (
                r#"{{printf "%s|%v|%q|%x|% X|%#x" .S .S .S .S .S .S}}"#,
                r#"go|go|"go"|676f|67 6F|0x676f"#,
            ),
            (
                r#"{{printf "%d|%5d|%-5d|%05d|%+d|%x|%X|%o|%b|%c|%#x" .I .I .I .I .I .I .I .I .I .I .I}}"#,
                "42|   42|42   |00042|+42|2a|2A|52|101010|*|0x2a",
            ),
            (
                r#"{{printf "%f|%.2f|%8.3f|%e|%g|%v|%.3g" .F .F .F .F .F .F .F}}"#,
                "1.234560|1.23|   1.235|1.234560e+00|1.23456|1.23456|1.23",
            ),
            (
                r#"{{printf "%t|%v|%5s|%-5s|%.1s|%%" .B .B .S .S .S}}"#,
                "true|true|   go|go   |g|%",
            ),
            (
                r#"{{printf "%v|%s|%q|%T" .A .A .A .A}}"#,
                r#"[x y]|[x y]|["x" "y"]|[]interface {}"#,
            ),
            (
                r#"{{printf "%d" .S}}|{{printf "%s" .I}}|{{printf "%d"}}|{{printf "%s" .S 1}}"#,
                "%!d(string=go)|%!s(int=42)|%!d(MISSING)|go%!(EXTRA int=1)",
            ),
            (
                r#"{{printf "%v %d" .N .N}}|{{printf "%*d|%-*d|%.*f" 4 7 3 7 1 .F}}"#,
                "<nil> %!d(<nil>)|   7|7  |1.2",
            ),
            (
                r#"{{printf "%6.2f|%06.2f|%+.1e|%x|%+08d" -1.5 2.5 12345.678 -255 42}}"#,
                " -1.50|002.50|+1.2e+04|-ff|+0000042",
            ),
            (
                r#"{{printf "%v %v %v" 1e20 1e-5 123456789.0}}"#,
                "1e+20 1e-05 1.23456789e+08",
            ),
            (r#"{{printf "trailing %"}}"#, "trailing %!(NOVERB)"),
        ],
    );
}

#[test]
fn header_mode() {
    let names = |n: &str| n.to_uppercase().replace('.', " ");
    let header = |t: &str| Template::parse(t).unwrap().header(&names);
    assert_eq!(
        header("table {{.ID}}\t{{.State.Status}}"),
        "ID\tSTATE STATUS"
    );
    assert_eq!(
        header("{{json .Labels}} {{lower .Names}} {{.Names | upper}}"),
        "LABELS NAMES NAMES"
    );
    assert_eq!(
        header("{{pad .Name 1 1}}|{{printf \"%-6s\" .Name}}|"),
        " NAME |NAME  |"
    );
    assert_eq!(
        header(
            "{{if .X}}{{.Y}}{{else}}no{{end}}|{{range .Z}}{{.W}}{{end}}|{{with .Q}}{{.R}}{{end}}"
        ),
        "Y|W|R"
    );
    assert_eq!(
        header("{{(index .Ports 0).HostPort}}|{{range $k, $v := .M}}{{$v}}{{end}}|{{$.Top}}"),
        "|M|TOP"
    );
    assert_eq!(header("{{.A}}{{index .A 5}}{{.B}}"), "AB");
}

#[test]
fn errors() {
    let v = json!({"S": "str", "A": [1], "N": null, "M": {}});
    let at = |ctx: &str, msg: &str| format!("template: :1:2: executing \"\" at <{ctx}>: {msg}");
    let cases = [
        ("{{.S", "template: :1: unclosed action".to_string()),
        ("{{.S }", "template: :1: unexpected \"}\" in operand".into()),
        ("{{.S}", "template: :1: bad character U+007D '}'".into()),
        ("{{range .A}}", "template: :1: unexpected EOF".into()),
        ("{{end}}", "template: :1: unexpected {{end}}".into()),
        ("a\n{{nosuch .S}}", "template: :2: function \"nosuch\" not defined".into()),
        ("{{$x}}", "template: :1: undefined variable \"$x\"".into()),
        ("{{}}", "template: :1: missing value for command".into()),
        ("{{break}}", "template: :1: {{break}} outside {{range}}".into()),
        ("{{/* x", "template: :1: unclosed comment".into()),
        ("{{\"abc}}", "template: :1: unterminated quoted string".into()),
        ("{{3x}}", "template: :1: bad number syntax: \"3x\"".into()),
        ("{{.S | 1}}", "template: :1: non executable command in pipeline stage 2".into()),
        ("{{if 1}}{{else}}{{else}}{{end}}", "template: :1: expected end; found {{else}}".into()),
        ("{{define \"b\"}}x{{end}}{{block \"b\" .}}y{{end}}",
         "template: :1: template: multiple definition of template \"b\"".into()),
        ("{{upper .S .S}}", at("upper .S .S", "wrong number of args for upper: want 1 got 2")),
        ("{{index .A 5}}", at("index .A 5", "error calling index: index out of range: 5")),
        ("{{.S.Field}}", at(".S.Field", "can't evaluate field Field in type string")),
        ("{{.N.Field}}", at(".N.Field", "nil pointer evaluating interface {}.Field")),
        ("{{upper 1}}", at("upper 1", "wrong type for value; expected string; got int")),
        ("{{len 3}}", at("len 3", "error calling len: len of type int")),
        ("{{lt 1 \"a\"}}", at("lt 1 \"a\"", "error calling lt: incompatible types for comparison")),
        ("{{call .S}}", at("call .S", "error calling call: non-function of type string")),
        ("{{1 2}}", at("1 2", "can't give argument to non-function 1")),
        ("{{.S 1}}", at(".S 1", "S is not a method but has arguments")),
        ("x\n {{index .A 5 | printf \"%s\" | printf \"%d %d\" 1 2 3 | eq}}",
         "template: :2:3: executing \"\" at <index .A 5>: error calling index: index out of range: 5".into()),
        ("{{range .S}}{{end}}", "template: :1:8: executing \"\" at <.S>: range can't iterate over str".into()),
        ("{{template \"x\"}}",
         "template: :1:0: executing \"\" at <{{template \"x\"}}>: template \"x\" not defined".into()),
    ];
    for (t, want) in cases {
        assert_eq!(error(t, &v), want, "template {t}");
    }
    let recursive = "{{define \"r\"}}{{template \"r\" .}}{{end}}{{template \"r\" .}}";
    assert!(error(recursive, &v).contains("exceeded maximum template depth"));
}

#[test]
fn no_panics_on_garbage() {
    let v = json!({"A": [1, {"B": "x"}], "S": "s", "M": {"k": null}, "N": null});
    let templates = [
        r#"{{range $i, $v := .A}}{{if eq $i 0}}{{$v}}{{else if $v.B}}{{printf "%-5.2q|%x" $v.B $i}}{{else}}-{{end}}{{end}}"#,
        r#"{{- /* c */ -}} {{with $x := index .M "k"}}{{$x}}{{else with .S}}{{slice . 0 1}}{{end}}"#,
        r#"{{define "t"}}{{(index .A 1).B | upper | printf "%s%s" "<"}}{{end}}{{block "u" .}}{{template "t" .}}{{end}}"#,
        r#"{{'\x41'}}{{"\u00e9\U0001F600\101"}}{{`raw`}}{{0x1F}}{{-1.5e3}}{{json (split "a:b" ":")}}"#,
        "table {{.A}}\\t{{pad .S 1 2}}\\n{{truncate .S 1}}{{$}}{{and .N (len .N)}}{{or 1}}",
    ];
    let junk = [
        "{{",
        "}}",
        "{{{",
        "{{-",
        "{{- ",
        " -}}",
        "{{.",
        "{{$",
        "{{(",
        "{{)}}",
        "{{((1)",
        "{{\"\\",
        "{{'",
        "{{'ab'}}",
        "{{`",
        "{{1..2}}",
        "{{0x}}",
        "{{1e}}",
        "{{.A.}}",
        "{{..}}",
        "{{$x :=}}",
        "{{$x, $y := 1}}",
        "{{range $a, $b, $c := .A}}{{end}}",
        "{{else}}",
        "{{if}}{{end}}",
        "{{define}}",
        "{{template}}",
        "{{block \"x\"}}",
        "{{end",
        "{{/**/",
        "{{/* */ .X}}",
        "{{:}}",
        "{{:=}}",
        "{{=}}",
        "{{|}}",
        "{{.A|}}",
        "{{\u{1}}}",
        "{{é}}",
        "{{.é}}",
        "{{printf \"%\"}}",
        "{{printf \"%*d\" \"x\" 1}}",
        "{{printf \"%.99999999d\" 1}}",
        "{{printf \"%*d\" -9223372036854775808 1}}",
        "{{printf \"%[1]d\" 1}}",
        "{{slice .S 2 1}}",
        "{{slice \"é\" 0 1}}",
        "{{index .A -1}}",
        "{{index .S 9}}",
        "{{pad .S -1 0}}",
        "{{pad .S 99999999999 0}}",
        "{{truncate .S -1}}",
        "{{range -5}}x{{end}}",
        "{{range 1.5}}{{end}}",
        "{{range .A}}{{break 1}}{{end}}",
        "{{$x = 1}}",
        "{{nil}}",
        "{{.N.X.Y}}",
        "{{with .M}}{{.k.z}}{{end}}",
        "{{18446744073709551616}}",
        "{{-9223372036854775808}}",
        "{{08}}",
        "{{1i}}",
        "{{'\\400'}}",
        "{{(1).X}}",
        "{{\"s\".X}}",
        "{{index . \"A\" 1 \"B\" 0}}",
    ];
    for t in templates.iter().chain(junk.iter()) {
        for (i, _) in t.char_indices().chain([(t.len(), ' ')]) {
            if let Ok(tmpl) = Template::parse(&t[..i]) {
                let _ = tmpl.render(&v);
                let _ = tmpl.header(&|n| n.to_string());
            }
        }
    }
    for t in templates {
        assert!(Template::parse(t).unwrap().render(&v).is_ok(), "{t}");
    }
}

#[test]
fn deep_nesting_is_bounded() {
    let v = json!({});
    let parens = format!("{{{{{}1{}}}}}", "(".repeat(99), ")".repeat(99));
    assert_eq!(render(&parens, &v), "1");
    let ifs = format!("{}x{}", "{{if 1}}".repeat(99), "{{end}}".repeat(99));
    assert_eq!(render(&ifs, &v), "x");
    assert!(Template::parse(&format!("{{{{{}1", "(".repeat(10_000))).is_err());
    assert!(Template::parse(&"{{if 1}}".repeat(10_000)).is_err());
    let recursive = r#"{{define "r"}}{{if 1}}{{with 1}}{{range 1}}{{template "r" (((1)))}}{{end}}{{end}}{{end}}{{end}}{{template "r"}}"#;
    assert!(error(recursive, &v).contains("exceeded maximum template depth"));
    let _ = Template::parse(recursive)
        .unwrap()
        .header(&|n| n.to_string());
}
