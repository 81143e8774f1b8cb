//! The real workloads of `cargo xtask bench monitor`: what the tracker costs on work
//! people do, next to the syscall loops. `tar` archives /usr/include to /dev/null
//! (about 10,000 open/read/close), `make` builds 40 small C files with `make -j2`
//! (many short-lived processes: fork, exec and exit walks). Each is timed once per
//! mode per round, in the same rotation as the loops, so the ratios to "off" are
//! measured side by side.

use std::{fs, path::PathBuf, process::Command, time::Instant};

use anyhow::{Context as _, Result, bail};

use crate::util;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum RealWork {
    Tar,
    Make,
}

/// C files the `make` workload compiles.
const C_FILES: usize = 40;

impl RealWork {
    pub(crate) const ALL: [RealWork; 2] = [RealWork::Tar, RealWork::Make];

    pub(crate) fn name(self) -> &'static str {
        match self {
            RealWork::Tar => "tar",
            RealWork::Make => "make",
        }
    }

    pub(crate) fn label(self) -> &'static str {
        match self {
            RealWork::Tar => "tar cf /dev/null /usr/include",
            RealWork::Make => "make -j2 of 40 C files",
        }
    }

    /// Runs the workload once; returns its wall time in seconds.
    pub(crate) fn time(self) -> Result<f64> {
        match self {
            RealWork::Tar => {
                let mut c = Command::new("tar");
                c.args(["cf", "/dev/null", "/usr/include"]);
                timed(c)
            }
            RealWork::Make => {
                let dir = c_project()?;
                // The objects of the previous run go first (not timed).
                let mut clean = Command::new("make");
                clean.arg("-s").arg("-C").arg(&dir).arg("clean");
                timed(clean)?;
                let mut c = Command::new("make");
                c.arg("-s").arg("-j2").arg("-C").arg(&dir);
                timed(c)
            }
        }
    }
}

fn timed(mut c: Command) -> Result<f64> {
    let start = Instant::now();
    let out = c.output().with_context(|| format!("running {c:?}"))?;
    let wall = start.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "{c:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(wall)
}

/// The C project `make` builds (written once under target/bench/cbuild).
fn c_project() -> Result<PathBuf> {
    let dir = util::target_dir().join("bench").join("cbuild");
    let makefile = dir.join("Makefile");
    if makefile.is_file() {
        return Ok(dir);
    }
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut objs = Vec::new();
    for i in 0..C_FILES {
        let src = format!(
            "#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\n\n\
             struct item{i} {{ int key; char name[32]; }};\n\n\
             static int cmp{i}(const void *a, const void *b) {{\n\
             \treturn ((const struct item{i} *)a)->key - ((const struct item{i} *)b)->key;\n}}\n\n\
             int unit{i}(int n) {{\n\
             \tstruct item{i} *v = calloc((size_t)n, sizeof *v);\n\
             \tif (!v) return -1;\n\
             \tfor (int k = 0; k < n; k++) {{ v[k].key = (k * 7919) % n; \
             snprintf(v[k].name, sizeof v[k].name, \"item-%d\", k); }}\n\
             \tqsort(v, (size_t)n, sizeof *v, cmp{i});\n\
             \tint r = (int)strlen(v[0].name);\n\tfree(v);\n\treturn r;\n}}\n"
        );
        fs::write(dir.join(format!("unit{i}.c")), src)?;
        objs.push(format!("unit{i}.o"));
    }
    let main_c = format!(
        "{}\nint main(void) {{ int s = 0;\n{}\treturn s == 0; }}\n",
        (0..C_FILES)
            .map(|i| format!("int unit{i}(int);"))
            .collect::<Vec<_>>()
            .join("\n"),
        (0..C_FILES)
            .map(|i| format!("\ts += unit{i}(100);\n"))
            .collect::<String>()
    );
    fs::write(dir.join("main.c"), main_c)?;
    fs::write(
        &makefile,
        format!(
            "OBJS = main.o {}\n\nprog: $(OBJS)\n\tcc -o $@ $(OBJS)\n\n%.o: %.c\n\tcc -O2 -c $< -o $@\n\n\
             clean:\n\trm -f prog $(OBJS)\n",
            objs.join(" ")
        ),
    )?;
    Ok(dir)
}
