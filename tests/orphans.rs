//! The unlinked-inode trees: an inode that loses its last link while open stays on its AG's
//! tree until its last close; a crash leaves it there and the next mount frees it (its data
//! blocks and the inode); one unlinked while closed is freed at once.

use std::path::Path;
use std::sync::Arc;
use ticketfs::device::FileDevice;
use ticketfs::fs::{Ctx, Fs, FsError, S_IFREG};
use ticketfs::image::open_image;
use ticketfs::mem::OverrunPolicy;
use ticketfs::mkfs::{make_filesystem, MkfsOptions};
use ticketfs::{Engine, EngineOptions};

fn mount(img: &Path) -> Fs {
    let dev: FileDevice = open_image(img).expect("open image");
    let eng = Engine::mount(
        Arc::new(dev),
        EngineOptions {
            overrun: OverrunPolicy::Panic,
            ..Default::default()
        },
    )
    .expect("mount");
    Fs::new(eng, false).expect("fs")
}

#[test]
fn unlinked_open_file_is_freed_at_last_close_or_next_mount() {
    let work = tempfile::tempdir().unwrap();
    let img = work.path().join("image");
    make_filesystem(
        &img,
        &MkfsOptions {
            size: Some(128 << 20),
            ..Default::default()
        },
    )
    .unwrap();
    let c = Ctx::ROOT;
    let fs = mount(&img);
    let root = fs.root();
    let free0 = fs.statfs().unwrap().bfree;

    // Unlinked while closed: freed at once.
    let a = fs
        .make(&c, root, b"closed", S_IFREG | 0o644, 0, None)
        .unwrap()
        .ino;
    fs.write(&c, a, 0, &vec![1u8; 300_000]).unwrap();
    fs.remove(&c, root, b"closed", false).unwrap();
    assert!(matches!(fs.getattr(a), Err(FsError::NotFound)));
    assert!(fs.unlinked().unwrap().is_empty());

    // Unlinked while open: on the tree until the last close.
    let b = fs
        .make(&c, root, b"open", S_IFREG | 0o644, 0, None)
        .unwrap()
        .ino;
    fs.write(&c, b, 0, &vec![2u8; 300_000]).unwrap();
    fs.open(&c, b, 6).unwrap();
    fs.remove(&c, root, b"open", false).unwrap();
    assert_eq!(
        fs.read(b, 0, 10).unwrap(),
        vec![2u8; 10],
        "still readable through the open file"
    );
    assert_eq!(fs.unlinked().unwrap(), vec![b]);
    fs.release(b).unwrap();
    assert!(fs.unlinked().unwrap().is_empty());
    assert!(matches!(fs.getattr(b), Err(FsError::NotFound)));

    // Unlinked while open, then a crash: the next mount frees it.
    let d = fs
        .make(&c, root, b"crash", S_IFREG | 0o644, 0, None)
        .unwrap()
        .ino;
    fs.write(&c, d, 0, &vec![3u8; 2_000_000]).unwrap();
    fs.open(&c, d, 6).unwrap();
    fs.remove(&c, root, b"crash", false).unwrap();
    fs.fsync().unwrap();
    assert_eq!(fs.unlinked().unwrap(), vec![d]);
    let free_held = fs.statfs().unwrap().bfree;
    assert!(
        free_held + 400 < free0,
        "the open file still holds its blocks"
    );
    fs.crash();

    let fs = mount(&img);
    assert!(
        fs.unlinked().unwrap().is_empty(),
        "the mount freed the orphan"
    );
    assert!(matches!(fs.getattr(d), Err(FsError::NotFound)));
    let free1 = fs.statfs().unwrap().bfree;
    // The free list may keep a few blocks out of the free-space count.
    assert!(
        free1 + 64 >= free0,
        "blocks not returned: {free1} free now, {free0} at the start"
    );
    fs.unmount().unwrap();
}
