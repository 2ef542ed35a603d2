#![doc = include_str!("../README.md")]

pub mod cargo;
pub mod dump;
pub mod fixture;
pub mod http;
pub mod nginx;
pub mod postgres;
pub mod proxy;
pub mod s3;
pub mod upstream;
