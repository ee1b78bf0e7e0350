//! The "newc" cpio format the kernel unpacks an initramfs from.

use crate::error::Result;

pub struct Writer {
    out: Vec<u8>,
    inode: u32,
}

impl Writer {
    pub fn new(out: Vec<u8>) -> Writer {
        Writer { out, inode: 1 }
    }

    pub fn dir(&mut self, name: &str, mode: u32) -> Result<()> {
        self.entry(name, libc::S_IFDIR | mode, 2, (0, 0), &[])
    }

    pub fn file(&mut self, name: &str, mode: u32, data: &[u8]) -> Result<()> {
        self.entry(name, libc::S_IFREG | mode, 1, (0, 0), data)
    }

    pub fn char_device(&mut self, name: &str, mode: u32, major: u32, minor: u32) -> Result<()> {
        self.entry(name, libc::S_IFCHR | mode, 1, (major, minor), &[])
    }

    fn entry(
        &mut self,
        name: &str,
        mode: u32,
        nlink: u32,
        rdev: (u32, u32),
        data: &[u8],
    ) -> Result<()> {
        let fields = [
            self.inode,
            mode,
            0,
            0,
            nlink,
            0,
            data.len() as u32,
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0,
        ];
        self.inode += 1;
        self.out.extend_from_slice(b"070701");
        for field in fields {
            self.out
                .extend_from_slice(format!("{field:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
        Ok(())
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    pub fn finish(mut self) -> Result<Vec<u8>> {
        self.entry("TRAILER!!!", 0, 1, (0, 0), &[])?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_reads_back_what_was_written() {
        let mut writer = Writer::new(Vec::new());
        writer.dir("modules", 0o755).unwrap();
        writer.file("modules/order", 0o644, b"a.ko\n").unwrap();
        writer.char_device("dev/console", 0o600, 5, 1).unwrap();
        let bytes = writer.finish().unwrap();
        let dir = std::env::temp_dir().join(format!("keel-cpio-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("x.cpio"), &bytes).unwrap();
        // cpio(1) lists it, when the machine has it.
        if let Ok(out) = std::process::Command::new("cpio")
            .args(["-t", "-F"])
            .arg(dir.join("x.cpio"))
            .output()
        {
            let listed = String::from_utf8_lossy(&out.stdout);
            assert_eq!(
                listed.lines().collect::<Vec<_>>(),
                ["modules", "modules/order", "dev/console"]
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(&bytes[..6], b"070701");
        assert_eq!(bytes.len() % 4, 0);
    }
}
